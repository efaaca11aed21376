package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTick is USER_HZ, the unit of utime and stime in /proc/PID/stat. It
// is 100 on every Linux architecture Go supports (the kernel reports
// clock_t in USER_HZ, fixed by its ABI).
const clockTick = 10 * time.Millisecond

// procSample is what the benchmark reads about one process at one moment.
type procSample struct {
	At       time.Time
	VmHWM    int64 // peak resident set, bytes
	VmRSS    int64 // resident set now, bytes
	RssAnon  int64
	RssFile  int64
	Threads  int
	UTime    time.Duration // user CPU, from /proc/PID/stat (10 ms resolution)
	STime    time.Duration // system CPU
	OnCPU    time.Duration // sum of every thread's run time from schedstat (ns resolution); 0 if unavailable
	Comm     string
	ExecPath string
}

func (s procSample) CPU() time.Duration { return s.UTime + s.STime }

// sampleProc reads /proc/PID/status, /proc/PID/stat and
// /proc/PID/task/*/schedstat.
func sampleProc(pid int) (procSample, error) {
	s := procSample{At: time.Now()}
	dir := "/proc/" + strconv.Itoa(pid)
	status, err := os.ReadFile(dir + "/status")
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmHWM":
			s.VmHWM = n << 10
		case "VmRSS":
			s.VmRSS = n << 10
		case "RssAnon":
			s.RssAnon = n << 10
		case "RssFile":
			s.RssFile = n << 10
		case "Threads":
			s.Threads = int(n)
		case "Name":
			s.Comm = f[0]
		}
	}
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return s, err
	}
	// The fields after the command name, which is in parentheses and may
	// hold spaces: state is field 3, utime 14, stime 15.
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 {
		return s, fmt.Errorf("%s/stat: no ')'", dir)
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return s, fmt.Errorf("%s/stat: %d fields", dir, len(f))
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	s.UTime, s.STime = time.Duration(ut)*clockTick, time.Duration(st)*clockTick
	tasks, _ := filepath.Glob(dir + "/task/*/schedstat")
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b)); len(f) > 0 {
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			s.OnCPU += time.Duration(ns)
		}
	}
	s.ExecPath, _ = os.Readlink(dir + "/exe")
	return s, nil
}
