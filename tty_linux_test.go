package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

func init() { testRoles["sigrecorder"] = sigRecorderMain }

// sigRecorderMain records SIGINTs in $PROA_TEST_RECORD until $PROA_TEST_DONE
// exists, then exits 7.
func sigRecorderMain() {
	c := make(chan os.Signal, 16)
	signal.Notify(c, syscall.SIGINT)
	f, err := os.OpenFile(os.Getenv("PROA_TEST_RECORD"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		panic(err)
	}
	fmt.Fprintf(f, "pgrp=%d\n", syscall.Getpgrp())
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		select {
		case sig := <-c:
			fmt.Fprintln(f, strings.ReplaceAll(sig.String(), " ", "_"))
		case <-time.After(10 * time.Millisecond):
			if _, err := os.Stat(os.Getenv("PROA_TEST_DONE")); err == nil {
				os.Exit(7)
			}
		}
	}
	os.Exit(1)
}

// openPTY returns a new pseudo-terminal's master and slave.
func openPTY(t *testing.T) (master, slave *os.File) {
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { master.Close() })
	var unlock int32
	var n uint32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, master.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		t.Fatal(e)
	}
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, master.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); e != 0 {
		t.Fatal(e)
	}
	slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { slave.Close() })
	return master, slave
}

// TestCtrlCOnATerminalReachesTheCommandOnce: the terminal sends Ctrl-C to
// its foreground process group; the command must get it once, not once from
// the terminal and again from proa.
func TestCtrlCOnATerminalReachesTheCommandOnce(t *testing.T) {
	master, slave := openPTY(t)
	dir := t.TempDir()
	record, done := filepath.Join(dir, "record"), filepath.Join(dir, "done")
	cmd := exec.Command(os.Args[0], "--no-kube", "--log-level", "debug", "--",
		"/usr/bin/env", "PROA_TEST_AS=sigrecorder", "PROA_TEST_RECORD="+record, "PROA_TEST_DONE="+done, os.Args[0])
	cmd.Env = []string{"PROA_TEST_AS=proa", "PATH=" + os.Getenv("PATH"), "GORACE=atexit_sleep_ms=0"}
	var stderr syncBuffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, &stderr
	// proa leads a new session with the pty as its controlling terminal, as
	// a container's init does with tty: true.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { // drain the terminal's output
		b := make([]byte, 4096)
		for {
			if _, err := master.Read(b); err != nil {
				return
			}
		}
	}()
	read := func() string { b, _ := os.ReadFile(record); return string(b) }
	waitUntil := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !ok(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				t.Fatalf("timed out waiting for %s; record %q\n%s", what, read(), stderr.String())
			}
		}
	}
	waitUntil("the command", func() bool { return strings.HasPrefix(read(), "pgrp=") })
	master.Write([]byte{3}) // Ctrl-C
	waitUntil("SIGINT", func() bool { return strings.Contains(read(), "interrupt") })
	time.Sleep(200 * time.Millisecond) // room for a second delivery, which must not come
	os.WriteFile(done, nil, 0o644)
	cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 7 {
		t.Errorf("proa exited %d, want the command's 7\n%s", code, stderr.String())
	}
	if n := strings.Count(read(), "interrupt"); n != 1 {
		t.Errorf("the command got SIGINT %d times, want once; record:\n%s", n, read())
	}
	if pgrp := fmt.Sprintf("pgrp=%d\n", cmd.Process.Pid); strings.HasPrefix(read(), pgrp) {
		t.Errorf("the command ran in proa's process group")
	}
}
