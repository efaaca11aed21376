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

// notifySignals starts relaying; stop ends it. The signals stay caught
// after stop, dropped, until proa exits: a TERM then (a second one, for a
// shortened grace period) must not kill proa and lose the command's code.
func notifySignals() (s *signals, stop func()) {
	raw := make(chan os.Signal, 16)
	for _, sig := range forwardedSignals {
		// A signal proa's parent left ignored (nohup, trap '' HUP) stays
		// ignored, as with tini: SIG_IGN survives exec, so the command
		// inherits it, and proa neither forwards it nor acts on it. Go's
		// runtime keeps that state for HUP and INT only: it has replaced the
		// others' before main runs.
		if !signal.Ignored(sig) {
			signal.Notify(raw, sig)
		}
	}
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
	return s, func() { close(done) }
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
	// exited receives the command's wait statuses: a stop, each time it
	// stops, and its exit.
	exited <-chan syscall.WaitStatus
	// tty is the descriptor of the terminal whose foreground the command
	// was given, or -1.
	tty int
	// cont receives SIGCONT, with a terminal: proa stopped itself after the
	// command, and its parent continued it.
	cont      chan os.Signal
	suspended bool // proa stopped itself and was not continued yet
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
	exited := make(chan syscall.WaitStatus, 4)
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

// waitPID delivers pid's stops and its exit. WUNTRACED: on a terminal,
// Ctrl-Z stops the command, and proa must follow (see command.stopped).
func waitPID(pid int, exited chan<- syscall.WaitStatus) {
	for {
		var ws syscall.WaitStatus
		_, err := syscall.Wait4(pid, &ws, syscall.WUNTRACED, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return
		}
		exited <- ws
		if !ws.Stopped() {
			return
		}
	}
}

// reapAll waits for any child, for ever. With no child left it sleeps until
// a SIGCHLD says an adopted orphan has exited, or start has a new child.
func (r *reaper) reapAll() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WUNTRACED, nil)
		switch {
		case errors.Is(err, syscall.EINTR):
		case err != nil: // ECHILD
			<-r.wake
		case ws.Stopped():
			r.mu.Lock()
			exited := r.waiting[pid]
			r.mu.Unlock()
			select {
			case exited <- ws: // nil for an adopted orphan: nobody to tell
			default:
			}
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
	if errors.Is(cmd.Err, exec.ErrDot) {
		cmd.Err = nil // a relative directory in PATH is searched, as sh does
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// On a terminal (kubectl run -it, docker run -t, a developer's shell),
	// the terminal sends Ctrl-C to its foreground process group: give the
	// command a group of its own in the foreground, or it would get every
	// SIGINT twice, once from the terminal and once from proa.
	c := &command{tty: controllingTerminal()}
	if c.tty >= 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Foreground: true, Ctty: c.tty}
		c.cont = make(chan os.Signal, 1)
		signal.Notify(c.cont, syscall.SIGCONT)
	}
	exited, err := r.start(cmd)
	if err != nil {
		// The child may have taken the foreground before its exec failed.
		c.reclaimTerminal(0)
		c.stopNotify()
		return nil, err
	}
	c.proc, c.exited = cmd.Process, exited
	return c, nil
}

func (c *command) stopNotify() {
	if c.cont != nil {
		signal.Stop(c.cont)
	}
}

// controllingTerminal returns the first of stdin, stdout and stderr that is
// a terminal with proa's process group in its foreground (so it is proa's
// controlling terminal), or -1. Output alone on the terminal is enough:
// Ctrl-C reaches the foreground group all the same.
func controllingTerminal() int {
	for fd := 0; fd <= 2; fd++ {
		if pgrp, err := foreground(fd); err == nil && pgrp == syscall.Getpgrp() {
			return fd
		}
	}
	return -1
}

// isTerminal tells whether f is a terminal (any, not only the controlling
// one): only a terminal has a window size.
func isTerminal(f *os.File) bool {
	var ws [4]uint16
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), syscall.TIOCGWINSZ, uintptr(unsafe.Pointer(&ws)))
	return errno == 0
}

// foreground is the foreground process group of the terminal on fd.
func foreground(fd int) (int, error) {
	var pgrp int32
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.TIOCGPGRP, uintptr(unsafe.Pointer(&pgrp))); errno != 0 {
		return 0, errno
	}
	return int(pgrp), nil
}

// setForeground puts pgrp in the terminal's foreground. Done from a
// background group, that raises SIGTTOU, which would stop proa, unless it
// is ignored meanwhile; callers check that the terminal is theirs to give.
func setForeground(fd, pgrp int) {
	signal.Ignore(syscall.SIGTTOU)
	defer signal.Reset(syscall.SIGTTOU)
	p := int32(pgrp)
	syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.TIOCSPGRP, uintptr(unsafe.Pointer(&p)))
}

// reclaimTerminal puts proa's process group back in the terminal's
// foreground after the command, if the command's group still has it (after
// bg, the shell has it, and keeps it). With pgrp 0 (the command failed to
// start), it takes it back from a group that no longer exists.
func (c *command) reclaimTerminal(pgrp int) {
	if c.tty < 0 {
		return
	}
	fg, err := foreground(c.tty)
	if err != nil || fg == syscall.Getpgrp() {
		return
	}
	if pgrp != 0 && fg != pgrp || pgrp == 0 && syscall.Kill(-fg, 0) != syscall.ESRCH {
		return
	}
	setForeground(c.tty, syscall.Getpgrp())
}

// stopped follows a stop of the command. When the terminal stopped it
// (Ctrl-Z, or a background group reading or writing it), proa stops too,
// so that the shell that started proa gets its prompt back; it continues
// the command when continued itself. Without job control above proa
// (nobody could continue it: proa is PID 1, or shares its parent's process
// group), it continues the command at once, as a shell without job control
// would not have stopped it. A stop by anyone else is theirs to undo.
func (c *command) stopped(sig syscall.Signal, log *slog.Logger) {
	if c.tty < 0 || sig != syscall.SIGTSTP && sig != syscall.SIGTTIN && sig != syscall.SIGTTOU {
		log.Info("command stopped", "signal", signalName(sig))
		return
	}
	if !jobControl() {
		log.Info("command stopped by the terminal; nothing above proa can continue it: continuing it", "signal", signalName(sig))
		syscall.Kill(-c.proc.Pid, syscall.SIGCONT)
		return
	}
	log.Info("command stopped by the terminal: stopping proa too", "signal", signalName(sig))
	c.suspended = true
	// SIGSTOP, not sig: a parent may have left sig ignored, and proa would
	// then never stop nor be continued.
	syscall.Kill(os.Getpid(), syscall.SIGSTOP)
}

// continued follows proa's own continuation (fg or bg in the shell): the
// command gets the terminal's foreground back if proa has it (fg), and is
// continued.
func (c *command) continued(log *slog.Logger) {
	if !c.suspended {
		return
	}
	c.suspended = false
	fg, err := foreground(c.tty)
	inForeground := err == nil && fg == syscall.Getpgrp()
	if inForeground {
		setForeground(c.tty, c.proc.Pid)
	}
	log.Info("proa continued: continuing the command", "foreground", inForeground)
	syscall.Kill(-c.proc.Pid, syscall.SIGCONT)
}

// jobControl reports whether proa's parent is a shell with job control: it
// is in another process group of the same session, so it sees proa stop
// and can continue it.
func jobControl() bool {
	ppid := os.Getppid()
	if ppid == 0 {
		return false
	}
	ppgrp, err := syscall.Getpgid(ppid)
	return err == nil && ppgrp != syscall.Getpgrp() && getsid(ppid) == getsid(0)
}

func getsid(pid int) int {
	sid, _, errno := syscall.RawSyscall(syscall.SYS_GETSID, uintptr(pid), 0, 0)
	if errno != 0 {
		return -1
	}
	return int(sid)
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
	if errors.Is(err, exec.ErrDot) {
		err = nil // a relative directory in PATH is searched, as sh does
	}
	if err == nil {
		err = syscall.Exec(path, argv, os.Environ())
	}
	fmt.Fprintf(os.Stderr, "proa: running %s: %v\n", argv[0], err)
	return startFailureCode(err)
}

// runCommand runs the command, forwarding signals, and returns its exit
// code.
func runCommand(c *config, r *reaper, sigs <-chan os.Signal, started func(), log *slog.Logger) int {
	log.Info("running command", "command", c.command[0])
	cmd, err := r.startCommand(c.command)
	if err != nil {
		code := startFailureCode(err)
		log.Error("command could not be started", "err", err, "code", code)
		return code
	}
	defer cmd.stopNotify()
	started()
	for {
		select {
		case ws := <-cmd.exited:
			if ws.Stopped() {
				cmd.stopped(ws.StopSignal(), log)
				continue
			}
			cmd.reclaimTerminal(cmd.proc.Pid)
			code := exitCode(ws)
			if ws.Signaled() {
				log.Info("command exited", "code", code, "signal", signalName(ws.Signal()))
			} else {
				log.Info("command exited", "code", code)
			}
			return code
		case <-cmd.cont:
			cmd.continued(log)
		case sig := <-sigs:
			log.Debug("forwarding signal", "signal", signalName(sig))
			if err := cmd.proc.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
				log.Warn("forwarding signal failed", "signal", signalName(sig), "err", err)
			}
		}
	}
}
