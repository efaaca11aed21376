// Package proc starts and stops the local processes of the e2e harness.
//
// Every process is started from one dedicated, locked OS thread with
// Pdeathsig SIGKILL, so when the harness dies (even by a panic or a test
// timeout) the kernel kills what it started: control plane, sidecars and proa.
// Processes are stopped by the PID the harness got when it started them, never
// by name.
package proc

import (
	"errors"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"time"
)

type startReq struct {
	cmd  *exec.Cmd
	done chan error
}

var starts = make(chan startReq)

func init() {
	go func() {
		// The parent-death signal fires when the thread that forked the child
		// exits, so fork from one thread that lives as long as the process.
		runtime.LockOSThread()
		for r := range starts {
			r.done <- r.cmd.Start()
		}
	}()
}

// Start starts cmd so that it is killed when this process dies. It sets
// SysProcAttr.Pdeathsig (creating SysProcAttr if needed) and keeps the
// other SysProcAttr fields the caller set.
func Start(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	done := make(chan error, 1)
	starts <- startReq{cmd, done}
	return <-done
}

// ExitCode maps a process state the way a container runtime reports it:
// the exit status, or 128+N for death by signal N.
func ExitCode(ps *os.ProcessState) int {
	if ps == nil {
		return -1
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

// Stop sends SIGTERM to the process (by the PID this harness started), waits
// up to grace for done to be closed (the caller's Wait returning), then sends
// SIGKILL and waits again. It returns an error if the process outlives that.
func Stop(p *os.Process, done <-chan struct{}, grace time.Duration) error {
	if p == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	default:
	}
	_ = p.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return nil
	case <-time.After(grace):
	}
	_ = p.Kill()
	select {
	case <-done:
		return nil
	case <-time.After(10 * time.Second):
		return errors.New("process did not exit after SIGKILL")
	}
}
