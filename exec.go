package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// forwardedSignals reach the command. SIGURG (the Go runtime's preemption
// signal) and SIGCHLD are deliberately absent.
var forwardedSignals = []os.Signal{
	syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT,
	syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH,
}

// signals relays the signals proa handles, and remembers when the first
// TERM or INT came: the kubelet's grace period runs from then.
type signals struct {
	c      chan os.Signal
	termAt atomic.Int64  // unix nanoseconds; 0 until then
	termed chan struct{} // closed then
}

// notifySignals starts relaying; stop ends it.
func notifySignals() (s *signals, stop func()) {
	raw := make(chan os.Signal, 16)
	signal.Notify(raw, forwardedSignals...)
	// A broken stderr must not kill proa with SIGPIPE and lose the command's
	// exit status: with SIGPIPE notified, the write just fails. (Notify, not
	// Ignore: the command would inherit SIG_IGN.)
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	s = &signals{c: make(chan os.Signal, 16), termed: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case sig := <-raw:
				if (sig == syscall.SIGTERM || sig == syscall.SIGINT) && s.termAt.CompareAndSwap(0, time.Now().UnixNano()) {
					close(s.termed)
				}
				select {
				case s.c <- sig:
				default: // nobody listens (shutdown): dropped, as signal.Notify would
				}
			case <-done:
				return
			}
		}
	}()
	return s, func() { signal.Stop(raw); close(done) }
}

// terminating is when the first TERM or INT came, or zero.
func (s *signals) terminating() time.Time {
	if s == nil || s.termAt.Load() == 0 {
		return time.Time{}
	}
	return time.Unix(0, s.termAt.Load())
}

// terminated is closed when the first TERM or INT comes.
func (s *signals) terminated() <-chan struct{} {
	if s == nil {
		return nil
	}
	return s.termed
}

// command is the running program.
type command struct {
	proc *os.Process
	// exited receives the command's wait status once.
	exited <-chan syscall.WaitStatus
	tty    bool // the command was given the terminal's foreground
}

// reaper owns every wait for a child process: nothing else in proa may wait
// (exec.Cmd.Wait would race with it and lose the command's status). As PID 1
// it also collects every orphan the kernel hands to proa, for proa's whole
// life: a process left behind by the command, or by a kubectl exec session,
// would otherwise stay a zombie.
type reaper struct {
	all  bool           // collect every child (PID 1), not only those proa started
	wake chan os.Signal // SIGCHLD, only to wake the reaper when it has no child

	mu      sync.Mutex
	waiting map[int]chan syscall.WaitStatus
}

func newReaper(all bool) *reaper {
	r := &reaper{all: all, waiting: map[int]chan syscall.WaitStatus{}}
	if all {
		r.wake = make(chan os.Signal, 1)
		signal.Notify(r.wake, syscall.SIGCHLD)
		go r.reapAll()
	}
	return r
}

// start starts cmd, and arranges for its wait status to be delivered.
func (r *reaper) start(cmd *exec.Cmd) (<-chan syscall.WaitStatus, error) {
	// Held across Start, so that a child that exits at once is found in
	// waiting by reapAll.
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan syscall.WaitStatus, 1)
	pid := cmd.Process.Pid
	if !r.all {
		go waitPID(pid, exited)
		return exited, nil
	}
	r.waiting[pid] = exited
	select {
	case r.wake <- syscall.SIGCHLD: // there is a child to wait for now
	default:
	}
	return exited, nil
}

func waitPID(pid int, exited chan<- syscall.WaitStatus) {
	for {
		var ws syscall.WaitStatus
		_, err := syscall.Wait4(pid, &ws, 0, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err == nil {
			exited <- ws
		}
		return
	}
}

// reapAll waits for any child, for ever. With no child left it sleeps until
// a SIGCHLD says an adopted orphan has exited, or start has a new child.
func (r *reaper) reapAll() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, 0, nil)
		switch {
		case errors.Is(err, syscall.EINTR):
		case err != nil: // ECHILD
			<-r.wake
		default:
			r.mu.Lock()
			exited := r.waiting[pid]
			delete(r.waiting, pid)
			r.mu.Unlock()
			if exited != nil {
				exited <- ws
			}
		}
	}
}

// startCommand starts argv with proa's stdio, environment and working
// directory.
func (r *reaper) startCommand(argv []string) (*command, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// On a terminal (kubectl run -it, docker run -t, a developer's shell),
	// the terminal sends Ctrl-C to its foreground process group: give the
	// command a group of its own in the foreground, or it would get every
	// SIGINT twice, once from the terminal and once from proa.
	tty := ownsTerminal()
	if tty {
		cmd.SysProcAttr = &syscall.SysProcAttr{Foreground: true, Ctty: 0}
	}
	exited, err := r.start(cmd)
	if err != nil {
		return nil, err
	}
	return &command{proc: cmd.Process, exited: exited, tty: tty}, nil
}

// ownsTerminal reports whether stdin is a terminal whose foreground process
// group is proa's.
func ownsTerminal() bool {
	var pgrp int32
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, 0, syscall.TIOCGPGRP, uintptr(unsafe.Pointer(&pgrp)))
	return errno == 0 && int(pgrp) == syscall.Getpgrp()
}

// reclaimTerminal puts proa's process group back in the terminal's
// foreground once the command has exited. A background group that does so
// gets SIGTTOU, which would stop proa, unless it is ignored meanwhile.
func reclaimTerminal() {
	signal.Ignore(syscall.SIGTTOU)
	defer signal.Reset(syscall.SIGTTOU)
	pgrp := int32(syscall.Getpgrp())
	syscall.Syscall(syscall.SYS_IOCTL, 0, syscall.TIOCSPGRP, uintptr(unsafe.Pointer(&pgrp)))
}

// exitCode maps a wait status to the shell's convention.
func exitCode(ws syscall.WaitStatus) int {
	switch {
	case ws.Exited():
		return ws.ExitStatus()
	case ws.Signaled():
		return 128 + int(ws.Signal())
	}
	return 1
}

// startFailureCode is the shell's code for a command that could not be
// started: 127 when it does not exist, 126 when it cannot be executed.
func startFailureCode(err error) int {
	if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
		return exitNotFound
	}
	return exitCannotExec
}

// signalCode is proa's exit code when a signal stopped it before the command
// ran.
func signalCode(sig os.Signal) int {
	if s, ok := sig.(syscall.Signal); ok {
		return 128 + int(s)
	}
	return 1
}

// execDirectly replaces proa with the command, for PROA_DISABLED=1. It
// returns only if that fails.
func execDirectly(argv []string) int {
	path, err := exec.LookPath(argv[0])
	if err == nil {
		err = syscall.Exec(path, argv, os.Environ())
	}
	fmt.Fprintf(os.Stderr, "proa: running %s: %v\n", argv[0], err)
	return startFailureCode(err)
}

// runCommand runs the command, forwarding signals, and returns its exit
// code.
func runCommand(c *config, r *reaper, sigs <-chan os.Signal, started func(), log *slog.Logger) int {
	log.Info("running command", "argv", c.command)
	cmd, err := r.startCommand(c.command)
	if err != nil {
		code := startFailureCode(err)
		log.Error("command could not be started", "err", err, "code", code)
		return code
	}
	started()
	for {
		select {
		case ws := <-cmd.exited:
			if cmd.tty {
				reclaimTerminal()
			}
			code := exitCode(ws)
			if ws.Signaled() {
				log.Info("command exited", "code", code, "signal", ws.Signal().String())
			} else {
				log.Info("command exited", "code", code)
			}
			return code
		case sig := <-sigs:
			log.Debug("forwarding signal", "signal", sig.String())
			if err := cmd.proc.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
				log.Warn("forwarding signal failed", "signal", sig.String(), "err", err)
			}
		}
	}
}
