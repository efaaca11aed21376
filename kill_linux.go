package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"
)

// killSupported: -k and -K need Linux's /proc.
const killSupported = true

const procRoot = "/proc"

// process is one entry of /proc: a process, never a thread (threads live
// under /proc/PID/task, and readdir of /proc lists thread-group leaders only).
type process struct {
	pid, ppid int
	kthread   bool   // a kernel thread: the flag PF_KTHREAD
	state     byte   // R, S, Z, ...
	start     uint64 // start time in clock ticks: tells a process from a later one with the same PID
	exe       string // base name of /proc/PID/exe, "" when unreadable
}

// readProcesses walks root once. Processes that vanish mid-walk or cannot be
// read are skipped.
func readProcesses(root string) ([]process, error) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("listing processes: %w", err)
	}
	var out []process
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		p, ok := readProcess(root, pid)
		if ok {
			out = append(out, p)
		}
	}
	return out, nil
}

func readProcess(root string, pid int) (process, bool) {
	dir := filepath.Join(root, strconv.Itoa(pid))
	stat, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return process{}, false
	}
	p, ok := parseStat(stat)
	if !ok || p.pid != pid {
		return process{}, false
	}
	if exe, err := os.Readlink(filepath.Join(dir, "exe")); err == nil {
		p.exe = filepath.Base(exe)
	}
	return p, true
}

// parseStat reads /proc/PID/stat. The command name in parentheses may hold
// spaces and parentheses itself, so the fields start after the last ')'.
func parseStat(b []byte) (process, bool) {
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return process{}, false
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b[:open])))
	if err != nil {
		return process{}, false
	}
	// Fields after the name: 3 state, 4 ppid, ..., 9 flags, ..., 22 starttime.
	f := bytes.Fields(b[end+1:])
	if len(f) < 20 || len(f[0]) != 1 {
		return process{}, false
	}
	ppid, err1 := strconv.Atoi(string(f[1]))
	flags, err2 := strconv.ParseUint(string(f[6]), 10, 64)
	start, err3 := strconv.ParseUint(string(f[19]), 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return process{}, false
	}
	const pfKthread = 0x00200000 // include/linux/sched.h
	return process{pid: pid, ppid: ppid, kthread: flags&pfKthread != 0, state: f[0][0], start: start}, true
}

// errHostPID refuses kill mode where it would be a disaster.
var errHostPID = errors.New("kernel threads are visible, so this is the host's PID namespace (hostPID: true): refusing to signal anything; use shareProcessNamespace: true instead")

// killTargets picks the processes to signal: those named (by the base name
// of their executable), or with all every one, never PID 1, proa itself or
// its descendants, nor zombies.
func killTargets(procs []process, self int, names []string, all bool) ([]process, error) {
	parent := map[int]int{}
	for _, p := range procs {
		// Kernel threads (kthreadd, PID 2, and its children) are listed only
		// in the host's PID namespace. The parent PID cannot tell: in a Pod,
		// each container's first process has its parent (the runtime's shim)
		// outside the namespace, so it shows parent 0 too.
		if p.kthread {
			return nil, errHostPID
		}
		parent[p.pid] = p.ppid
	}
	descendsFromSelf := func(pid int) bool {
		for range len(parent) + 1 { // bounded, in case of a cycle in a racy read
			if pid == self {
				return true
			}
			next, ok := parent[pid]
			if !ok || next == 0 {
				return false
			}
			pid = next
		}
		return false
	}
	var out []process
	for _, p := range procs {
		if p.pid == 1 || p.state == 'Z' || descendsFromSelf(p.pid) {
			continue
		}
		if all || (p.exe != "" && slices.Contains(names, p.exe)) {
			out = append(out, p)
		}
	}
	return out, nil
}

// killProcesses signals the processes that -k and -K choose and returns
// those it signalled.
func killProcesses(c *config, log *slog.Logger) []process {
	if len(c.killNames) == 0 && !c.killAll {
		return nil
	}
	procs, err := readProcesses(procRoot)
	if err == nil {
		procs, err = killTargets(procs, os.Getpid(), c.killNames, c.killAll)
	}
	if err != nil {
		log.Error("not signalling sidecars", "err", err)
		return nil
	}
	var signalled []process
	for _, p := range procs {
		if err := syscall.Kill(p.pid, c.killSignal); err != nil {
			if !errors.Is(err, syscall.ESRCH) {
				log.Warn("signalling process failed", "pid", p.pid, "exe", p.exe, "signal", c.killSignal.String(), "err", err)
			}
			continue
		}
		log.Info("signalled process", "pid", p.pid, "exe", p.exe, "signal", c.killSignal.String())
		signalled = append(signalled, p)
	}
	if len(signalled) == 0 {
		log.Warn("no process to signal", "kill", c.killNames, "kill_all", c.killAll)
	}
	return signalled
}

// waitProcessesGone waits until every signalled process has exited (or is a
// zombie), and returns those still running when ctx ends.
func waitProcessesGone(ctx context.Context, procs []process) []process {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		procs = slices.DeleteFunc(procs, func(p process) bool {
			now, ok := readProcess(procRoot, p.pid)
			return !ok || now.start != p.start || now.state == 'Z'
		})
		if len(procs) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return procs
		case <-tick.C:
		}
	}
}
