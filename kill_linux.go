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
	"strings"
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
	// When exe is unreadable (another user's process, or one with file
	// capabilities: the link needs ptrace access, which containers lack by
	// default), what else names it: the base name of argv[0] from
	// /proc/PID/cmdline, and /proc/PID/comm (at most 15 bytes).
	argv0, comm string
	match       string // the rule that chose it: exe, argv0, comm or kill-all
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
	p, ok := readStat(root, pid)
	if !ok {
		return p, false
	}
	dir := filepath.Join(root, strconv.Itoa(pid))
	if exe, err := os.Readlink(filepath.Join(dir, "exe")); err == nil {
		p.exe = filepath.Base(exe)
		return p, true
	}
	if cmdline, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil {
		if argv0, _, _ := bytes.Cut(cmdline, []byte{0}); len(argv0) > 0 {
			p.argv0 = filepath.Base(string(argv0))
		}
	}
	if comm, err := os.ReadFile(filepath.Join(dir, "comm")); err == nil {
		p.comm = strings.TrimSuffix(string(comm), "\n")
	}
	return p, true
}

// readStat reads /proc/PID/stat only.
func readStat(root string, pid int) (process, bool) {
	stat, err := os.ReadFile(filepath.Join(root, strconv.Itoa(pid), "stat"))
	if err != nil {
		return process{}, false
	}
	p, ok := parseStat(stat)
	if !ok || p.pid != pid {
		return process{}, false
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
		if p.match = matchName(p, names); all && p.match == "" {
			p.match = "kill-all"
		}
		if p.match != "" {
			out = append(out, p)
		}
	}
	return out, nil
}

// commLen is the kernel's limit on /proc/PID/comm (TASK_COMM_LEN less the
// terminating NUL).
const commLen = 15

// matchName tells which rule makes p one of the named processes, or "":
// the base name of its executable, else (when that is unreadable) the base
// name of its argv[0], else its comm, compared with the name cut as the
// kernel cuts it.
func matchName(p process, names []string) string {
	for _, name := range names {
		switch {
		case p.exe != "":
			if p.exe == name {
				return "exe"
			}
		case p.argv0 == name:
			return "argv0"
		case p.comm != "" && p.comm == name[:min(len(name), commLen)]:
			return "comm"
		}
	}
	return ""
}

// name is what the process is called in logs: what matched it, else the
// first known of its names.
func (p process) name() string {
	switch {
	case p.match == "comm":
		return p.comm
	case p.exe != "":
		return p.exe
	case p.argv0 != "":
		return p.argv0
	}
	return p.comm
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
		if err := signalProcess(procRoot, p, c.killSignal); err != nil {
			switch {
			case errors.Is(err, syscall.ESRCH): // exited meanwhile
			case errors.Is(err, errPIDReused):
				log.Info("not signalling a process whose PID was reused", "pid", p.pid, "name", p.name())
			default:
				log.Warn("signalling process failed", "pid", p.pid, "name", p.name(), "signal", signalName(c.killSignal), "err", err)
			}
			continue
		}
		log.Info("signalled process", "pid", p.pid, "exe", p.exe, "name", p.name(), "match", p.match, "signal", signalName(c.killSignal))
		signalled = append(signalled, p)
	}
	if len(signalled) == 0 {
		log.Warn("no process to signal", "kill", c.killNames, "kill_all", c.killAll)
	}
	return signalled
}

// errPIDReused: the process walked has exited and its PID now belongs to
// another one, which must not get the signal.
var errPIDReused = errors.New("the PID now belongs to another process")

// Syscall numbers, the same on every architecture Go supports but MIPS,
// where these are not system calls: ENOSYS there, and kill is used.
const (
	sysPidfdSendSignal = 424
	sysPidfdOpen       = 434
)

// pidfdOpen opens a pidfd (close-on-exec) for pid; a variable for tests.
var pidfdOpen = func(pid int) (int, error) {
	fd, _, errno := syscall.Syscall(sysPidfdOpen, uintptr(pid), 0, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(fd), nil
}

// signalProcess sends sig to p unless p has exited and its PID was reused
// since the walk. A pidfd pins the process that has the PID when it is
// opened; if that process started when p did, it is p, and the signal
// cannot reach another. Without pidfds (Linux before 5.3, or a seccomp
// profile that refuses pidfd_open), kill after the same check leaves a
// small window.
func signalProcess(root string, p process, sig syscall.Signal) error {
	fd, err := pidfdOpen(p.pid)
	if errors.Is(err, syscall.ENOSYS) || errors.Is(err, syscall.EPERM) {
		if err := stillThere(root, p); err != nil {
			return err
		}
		return syscall.Kill(p.pid, sig)
	}
	if err != nil {
		return err // ESRCH: exited and reaped
	}
	defer syscall.Close(fd)
	if err := stillThere(root, p); err != nil {
		return err
	}
	_, _, errno := syscall.Syscall6(sysPidfdSendSignal, uintptr(fd), uintptr(sig), 0, 0, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// stillThere checks that p's PID still belongs to p, by its start time:
// nil, ESRCH when nothing has the PID, or errPIDReused.
func stillThere(root string, p process) error {
	now, ok := readStat(root, p.pid)
	switch {
	case !ok:
		return syscall.ESRCH
	case now.start != p.start:
		return errPIDReused
	}
	return nil
}

// waitProcessesGone waits until every signalled process has exited (or is a
// zombie), and returns those still running when ctx ends (looked at once
// more then: the sidecars' exit may be what ended it).
func waitProcessesGone(ctx context.Context, procs []process) []process {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for ended := false; ; {
		procs = slices.DeleteFunc(procs, func(p process) bool {
			now, ok := readStat(procRoot, p.pid)
			return !ok || now.start != p.start || now.state == 'Z'
		})
		if len(procs) == 0 || ended {
			return procs
		}
		select {
		case <-ctx.Done():
			ended = true
		case <-tick.C:
		}
	}
}
