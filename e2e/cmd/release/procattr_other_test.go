//go:build !linux

package main

import "syscall"

const syscallSIGTERM = syscall.SIGTERM

func containerdProcAttr() *syscall.SysProcAttr { return nil }
