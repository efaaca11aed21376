package main

import "syscall"

const syscallSIGTERM = syscall.SIGTERM

// containerdProcAttr makes the test's containerd die with the test binary,
// even when it is killed.
func containerdProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
