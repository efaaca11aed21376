package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
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

func init() {
	testRoles["ttyparent"] = ttyParentMain
	testRoles["jobshell"] = jobShellMain
}

// tcgetpgrp is the foreground process group of the terminal on fd.
func tcgetpgrp(fd uintptr) int {
	var pgrp int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCGPGRP, uintptr(unsafe.Pointer(&pgrp))); e != 0 {
		return -int(e)
	}
	return int(pgrp)
}

// tcsetpgrp puts pgrp in the terminal's foreground, as a shell does.
func tcsetpgrp(fd uintptr, pgrp int) {
	signal.Ignore(syscall.SIGTTOU) // a background group may do it then
	defer signal.Reset(syscall.SIGTTOU)
	p := int32(pgrp)
	syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCSPGRP, uintptr(unsafe.Pointer(&p)))
}

// note appends a line to $PROA_TEST_PARENT_RECORD.
func note(format string, args ...any) {
	f, err := os.OpenFile(os.Getenv("PROA_TEST_PARENT_RECORD"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		panic(err)
	}
	fmt.Fprintf(f, format+"\n", args...)
	f.Close()
}

// proaOnTerminal is proa (os.Args[1:]) started by a test role that leads
// the terminal's session.
func proaOnTerminal() *exec.Cmd {
	signal.Notify(make(chan os.Signal, 1), syscall.SIGINT) // caught, not ignored: proa must not inherit SIG_IGN
	cmd := exec.Command(os.Args[0], os.Args[1:]...)
	cmd.Env = append(os.Environ(), "PROA_TEST_AS=proa")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if os.Getenv("PROA_TEST_STDIN") == "null" {
		cmd.Stdin = nil // /dev/null
	}
	return cmd
}

// foregroundIs says whose group the terminal's foreground is.
func foregroundIs() string {
	if tcgetpgrp(1) == syscall.Getpgrp() {
		return "ours"
	}
	return "other"
}

// ttyParentMain leads the terminal's session and runs proa in its own
// process group without job control, as sh -c under script(1) does, then
// records proa's exit code and whether the terminal's foreground came back.
func ttyParentMain() {
	cmd := proaOnTerminal()
	cmd.Run()
	note("exited %d foreground=%s", cmd.ProcessState.ExitCode(), foregroundIs())
	os.Exit(0)
}

// jobShellMain is a shell with job control: proa runs in a process group of
// its own in the foreground; when proa stops, the shell takes the terminal
// back and records it, then continues proa in the foreground or the
// background when the test creates the file "fg" or "bg" beside the record.
func jobShellMain() {
	dir := filepath.Dir(os.Getenv("PROA_TEST_PARENT_RECORD"))
	cmd := proaOnTerminal()
	cmd.SysProcAttr = &syscall.SysProcAttr{Foreground: true, Ctty: 1}
	if err := cmd.Start(); err != nil {
		note("start: %v", err)
		os.Exit(1)
	}
	pid := cmd.Process.Pid
	note("proa=%d", pid)
	for {
		var ws syscall.WaitStatus
		if _, err := syscall.Wait4(pid, &ws, syscall.WUNTRACED, nil); err == syscall.EINTR {
			continue
		} else if err != nil {
			note("wait: %v", err)
			os.Exit(1)
		}
		if !ws.Stopped() {
			note("exited %d foreground=%s", ws.ExitStatus(), foregroundIs())
			os.Exit(0)
		}
		tcsetpgrp(1, syscall.Getpgrp())
		note("stopped foreground=%s", foregroundIs())
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			if os.Remove(filepath.Join(dir, "fg")) == nil {
				tcsetpgrp(1, pid)
				syscall.Kill(-pid, syscall.SIGCONT)
				break
			}
			if os.Remove(filepath.Join(dir, "bg")) == nil {
				syscall.Kill(-pid, syscall.SIGCONT)
				break
			}
			if time.Now().After(deadline) {
				syscall.Kill(-pid, syscall.SIGKILL)
				os.Exit(1)
			}
		}
	}
}

// onTerminal runs role (ttyparent or jobshell) as the leader of a new
// session on a new pseudo-terminal, with proa running argv under it, and
// the command the SIGINT recorder. It returns the terminal's master side,
// the directory of the records, and functions that read the command's
// record and the parent's.
type terminalRun struct {
	t              *testing.T
	master         *os.File
	dir            string
	record, parent string // the command's record, the parent's
	stderr         *syncBuffer
}

func onTerminal(t *testing.T, role string, stdinNull bool, argv ...string) *terminalRun {
	master, slave := openPTY(t)
	dir := t.TempDir()
	r := &terminalRun{t: t, master: master, dir: dir, record: filepath.Join(dir, "record"),
		parent: filepath.Join(dir, "parent"), stderr: new(syncBuffer)}
	if len(argv) == 0 {
		argv = []string{"/usr/bin/env", "PROA_TEST_AS=sigrecorder", "PROA_TEST_RECORD=" + r.record,
			"PROA_TEST_DONE=" + filepath.Join(dir, "done"), os.Args[0]}
	}
	cmd := exec.Command(os.Args[0], append([]string{"--no-kube", "--log-level", "debug", "--"}, argv...)...)
	cmd.Env = []string{"PROA_TEST_AS=" + role, "PROA_TEST_PARENT_RECORD=" + r.parent, "PATH=" + os.Getenv("PATH"), "GORACE=atexit_sleep_ms=0"}
	if stdinNull {
		cmd.Env = append(cmd.Env, "PROA_TEST_STDIN=null")
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, r.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		// Everything this test started: the parent, proa and the command
		// (each command group is its own pid), even when stopped.
		for _, pid := range r.pids() {
			syscall.Kill(-pid, syscall.SIGKILL)
			syscall.Kill(pid, syscall.SIGKILL)
		}
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("proa's stderr:\n%s\ncommand's record:\n%s\nparent's record:\n%s", r.stderr, read(r.record), read(r.parent))
		}
	})
	go func() { // drain the terminal's output
		b := make([]byte, 4096)
		for {
			if _, err := master.Read(b); err != nil {
				return
			}
		}
	}()
	return r
}

func read(path string) string { b, _ := os.ReadFile(path); return string(b) }

// pids lists the processes and groups the records name.
func (r *terminalRun) pids() []int {
	var out []int
	for _, l := range strings.Fields(read(r.record) + " " + read(r.parent)) {
		for _, p := range []string{"pgrp=", "proa="} {
			if n, err := strconv.Atoi(strings.TrimPrefix(l, p)); err == nil && strings.HasPrefix(l, p) {
				out = append(out, n)
			}
		}
	}
	return out
}

func (r *terminalRun) waitUntil(what string, ok func() bool) {
	r.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !ok(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			r.t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func (r *terminalRun) waitRecord(path, substr string) {
	r.t.Helper()
	r.waitUntil(fmt.Sprintf("%q in %s", substr, filepath.Base(path)), func() bool { return strings.Contains(read(path), substr) })
}

func (r *terminalRun) touch(name string) {
	if err := os.WriteFile(filepath.Join(r.dir, name), nil, 0o644); err != nil {
		r.t.Fatal(err)
	}
}

// A command that cannot start must not leave the terminal's foreground to
// its dead process group: the shell would lose its next input.
func TestTerminalForegroundBackAfterStartFailure(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Paths, not names: a name not on PATH fails before proa forks.
	for _, tt := range []struct {
		name, path string
		code       int
	}{{"missing", filepath.Join(dir, "missing"), 127}, {"not executable", plain, 126}} {
		t.Run(tt.name, func(t *testing.T) {
			r := onTerminal(t, "ttyparent", false, tt.path)
			r.waitRecord(r.parent, "exited")
			if got, want := strings.TrimSpace(read(r.parent)), fmt.Sprintf("exited %d foreground=ours", tt.code); got != want {
				t.Errorf("parent recorded %q, want %q", got, want)
			}
		})
	}
}

// Output on the terminal is enough: with stdin from /dev/null the command
// still gets the foreground, so Ctrl-C reaches it once.
func TestCtrlCWithStdinFromDevNull(t *testing.T) {
	r := onTerminal(t, "ttyparent", true)
	r.waitRecord(r.record, "pgrp=")
	r.master.Write([]byte{3}) // Ctrl-C
	r.waitRecord(r.record, "interrupt")
	time.Sleep(200 * time.Millisecond) // room for a second delivery, which must not come
	r.touch("done")
	r.waitRecord(r.parent, "exited")
	if n := strings.Count(read(r.record), "interrupt"); n != 1 {
		t.Errorf("the command got SIGINT %d times, want once", n)
	}
	if got := strings.TrimSpace(read(r.parent)); got != "exited 7 foreground=ours" {
		t.Errorf("parent recorded %q, want exited 7 foreground=ours", got)
	}
}

// Ctrl-Z stops the command; proa stops too, so that the shell gets the
// terminal back; fg continues both with the command in the foreground, bg
// continues them in the background and proa leaves the terminal to the
// shell. Without job control, proa continues the command at once.
func TestCtrlZ(t *testing.T) {
	stop := func(t *testing.T, r *terminalRun) {
		r.waitRecord(r.record, "pgrp=")
		r.master.Write([]byte{26}) // Ctrl-Z
		r.waitRecord(r.parent, "stopped")
		if got := read(r.parent); !strings.Contains(got, "stopped foreground=ours") {
			t.Errorf("parent recorded %q after Ctrl-Z, want stopped foreground=ours", got)
		}
	}
	t.Run("fg", func(t *testing.T) {
		r := onTerminal(t, "jobshell", false)
		stop(t, r)
		r.touch("fg")
		pgrp, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(read(r.record), "pgrp=")))
		r.waitUntil("the command in the foreground again", func() bool { return tcgetpgrp(r.master.Fd()) == pgrp })
		r.master.Write([]byte{3}) // Ctrl-C
		r.waitRecord(r.record, "interrupt")
		r.touch("done")
		r.waitRecord(r.parent, "exited")
		if n := strings.Count(read(r.record), "interrupt"); n != 1 {
			t.Errorf("the command got SIGINT %d times, want once", n)
		}
		if !strings.Contains(read(r.parent), "exited 7 ") {
			t.Errorf("parent recorded %q, want proa's exit 7", read(r.parent))
		}
	})
	t.Run("bg", func(t *testing.T) {
		r := onTerminal(t, "jobshell", false)
		stop(t, r)
		r.touch("bg")
		time.Sleep(100 * time.Millisecond)
		r.touch("done")
		r.waitRecord(r.parent, "exited")
		if !strings.Contains(read(r.parent), "exited 7 foreground=ours") {
			t.Errorf("parent recorded %q, want exited 7 foreground=ours: proa took the terminal from the shell", read(r.parent))
		}
	})
	t.Run("no job control", func(t *testing.T) {
		r := onTerminal(t, "ttyparent", false)
		r.waitRecord(r.record, "pgrp=")
		r.master.Write([]byte{26}) // Ctrl-Z: nobody could continue proa
		time.Sleep(100 * time.Millisecond)
		r.master.Write([]byte{3})
		r.waitRecord(r.record, "interrupt")
		r.touch("done")
		r.waitRecord(r.parent, "exited")
		if got := strings.TrimSpace(read(r.parent)); got != "exited 7 foreground=ours" {
			t.Errorf("parent recorded %q, want exited 7 foreground=ours", got)
		}
	})
}

// Without a chosen format, logs are text on a terminal (a developer's
// shell, kubectl run -it) and JSON elsewhere; a choice always wins.
func TestLogFormatFollowsTheTerminal(t *testing.T) {
	for _, tt := range []struct {
		name   string
		tty    bool
		format string
		json   bool
	}{
		{"terminal", true, "", false},
		{"pipe", false, "", true},
		{"terminal, json chosen", true, "json", true},
		{"pipe, text chosen", false, "text", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "--", "/bin/true")
			cmd.Env = []string{"PROA_TEST_AS=proa", "PATH=" + os.Getenv("PATH"), "GORACE=atexit_sleep_ms=0"}
			if tt.format != "" {
				cmd.Env = append(cmd.Env, "PROA_LOG_FORMAT="+tt.format)
			}
			var out bytes.Buffer
			if !tt.tty {
				cmd.Stderr = &out
				if err := cmd.Run(); err != nil {
					t.Fatal(err)
				}
			} else {
				master, slave := openPTY(t)
				cmd.Stderr = slave
				if err := cmd.Run(); err != nil {
					t.Fatal(err)
				}
				slave.Close()
				master.SetReadDeadline(time.Now().Add(5 * time.Second))
				buf := make([]byte, 4096)
				n, _ := io.ReadAtLeast(master, buf, 1)
				out.Write(buf[:n])
			}
			if isJSON := strings.HasPrefix(out.String(), "{"); isJSON != tt.json {
				t.Errorf("logs begin %q: JSON %v, want %v", out.String()[:min(60, out.Len())], isJSON, tt.json)
			}
		})
	}
}
