package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// The programs proa runs in these tests are the test binary itself, as
// childMain(MODE ARGS...). proa hands its own environment, PROA_TEST_AS=proa
// included, to the command, so the command goes through env(1) to become a
// child instead of a second proa.

// childModes are the programs childMain can be; each returns its exit code.
var childModes = map[string]func(args []string) int{
	"exit":    childExit,   // exit CODE
	"kill":    childKill,   // kill SIGNUM: die from that signal
	"output":  childOutput, // output NOUT NERR: write outputPattern to stdout and stderr
	"cat":     childCat,    // cat: copy stdin to stdout
	"env-cwd": childEnvCwd, // env-cwd VAR: print $VAR, a NUL, then the working directory
	"pid":     childPID,    // pid FILE CODE: write the PID to FILE, exit CODE
}

// childLifetime bounds every child, so that none outlives a failed test.
const childLifetime = 20 * time.Second

func childMain(args []string) {
	if len(args) == 0 || childModes[args[0]] == nil {
		fmt.Fprintf(os.Stderr, "childMain: unknown mode in %q\n", args)
		os.Exit(100)
	}
	os.Exit(childModes[args[0]](args[1:]))
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(100)
	}
	return n
}

// exitWithParent ends the child if proa goes away before it, so a failed
// test leaves nothing running.
func exitWithParent() {
	ppid := os.Getppid()
	go func() {
		for start := time.Now(); time.Since(start) < childLifetime; time.Sleep(20 * time.Millisecond) {
			if os.Getppid() != ppid {
				os.Exit(98)
			}
		}
		os.Exit(99)
	}()
}

func touch(path string) {
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(100)
	}
}

func childExit(args []string) int { return atoi(args[0]) }

func childKill(args []string) int {
	syscall.Kill(os.Getpid(), syscall.Signal(atoi(args[0])))
	time.Sleep(childLifetime)
	return 99
}

func childOutput(args []string) int {
	os.Stdout.Write(outputPattern(atoi(args[0]), 'o'))
	os.Stderr.Write(outputPattern(atoi(args[1]), 'e'))
	return 0
}

func childCat([]string) int {
	exitWithParent()
	if _, err := io.Copy(os.Stdout, os.Stdin); err != nil {
		return 1
	}
	return 0
}

func childEnvCwd(args []string) int {
	wd, err := os.Getwd()
	if err != nil {
		return 1
	}
	fmt.Printf("%s\x00%s", os.Getenv(args[0]), wd)
	return 0
}

func childPID(args []string) int {
	if err := os.WriteFile(args[0], []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return 1
	}
	return atoi(args[1])
}

// outputPattern is n bytes taking every value from 0 to 255, never ending
// in a newline.
func outputPattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ byte(i>>8) ^ seed
	}
	if n > 0 && b[n-1] == '\n' {
		b[n-1] = '.'
	}
	return b
}

func testBinary(t testing.TB) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// childArgv is the command line that makes proa run childMain(mode, args).
func childArgv(t testing.TB, mode string, args ...string) []string {
	return append([]string{"/usr/bin/env", "PROA_TEST_AS=child", testBinary(t), mode}, args...)
}

// cleanEnv is the test's environment without anything that steers proa
// (no KUBERNETES_SERVICE_HOST: proa runs without the Kubernetes API), plus
// extra. Under -race, a program that exits 0 sleeps a second first to catch
// late reports; GORACE turns that off.
func cleanEnv(extra ...string) []string {
	env := []string{"GORACE=atexit_sleep_ms=0 " + os.Getenv("GORACE")}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "PROA_") || strings.HasPrefix(k, "KUBERNETES_") ||
			strings.HasPrefix(k, "POD_") || k == "RUST_LOG" || k == "PWD" || k == "GORACE" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// proaCmd is proa with args and the extra environment, not yet started.
func proaCmd(t testing.TB, extraEnv []string, args ...string) *exec.Cmd {
	cmd := exec.Command(testBinary(t), args...)
	cmd.Env = cleanEnv(append([]string{"PROA_TEST_AS=proa"}, extraEnv...)...)
	return cmd
}

// launched is a started process of the test binary.
type launched struct {
	t              *testing.T
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer // read only after done
	done           chan struct{}
	err            error
}

const waitLimit = 10 * time.Second

func launch(t *testing.T, cmd *exec.Cmd) *launched {
	t.Helper()
	l := &launched{t: t, cmd: cmd, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = &l.stdout, &l.stderr
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		l.err = cmd.Wait()
		close(l.done)
	}()
	t.Cleanup(func() {
		select {
		case <-l.done:
		default:
			cmd.Process.Kill()
			<-l.done
		}
	})
	return l
}

// exitCode waits for the process and returns its exit code; a process that
// does not exit in time, or dies from a signal, fails the test.
func (l *launched) exitCode() int {
	l.t.Helper()
	select {
	case <-l.done:
	case <-time.After(waitLimit):
		l.cmd.Process.Kill()
		<-l.done
		l.t.Fatalf("%q still running after %v; stderr:\n%s", l.cmd.Args, waitLimit, &l.stderr)
	}
	var ee *exec.ExitError
	if l.err != nil && !errors.As(l.err, &ee) {
		l.t.Fatalf("%q: %v", l.cmd.Args, l.err)
	}
	ws := l.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ws.Exited() {
		l.t.Fatalf("%q: %v, want an exit code; stderr:\n%s", l.cmd.Args, l.cmd.ProcessState, &l.stderr)
	}
	return ws.ExitStatus()
}

// await polls until path exists.
func (l *launched) await(path string) {
	l.t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		select {
		case <-l.done:
			l.t.Fatalf("%q exited (%v) before %s appeared; stderr:\n%s", l.cmd.Args, l.cmd.ProcessState, path, &l.stderr)
		case <-time.After(2 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			l.cmd.Process.Kill()
			<-l.done
			l.t.Fatalf("%s did not appear within %v; stderr:\n%s", path, waitLimit, &l.stderr)
		}
	}
}

func (l *launched) signal(sig os.Signal) {
	l.t.Helper()
	if err := l.cmd.Process.Signal(sig); err != nil {
		l.t.Fatalf("signalling %q: %v", l.cmd.Args, err)
	}
}

func TestExitCode(t *testing.T) {
	tests := []struct {
		ws   syscall.WaitStatus
		want int
	}{
		{0 << 8, 0},
		{3 << 8, 3},
		{255 << 8, 255},
		{syscall.WaitStatus(syscall.SIGKILL), 137},
		{syscall.WaitStatus(syscall.SIGTERM), 143},
		{syscall.WaitStatus(syscall.SIGINT), 130},
		{0x80 | syscall.WaitStatus(syscall.SIGSEGV), 139}, // core dumped
		{0x80 | syscall.WaitStatus(syscall.SIGABRT), 134},
	}
	for _, tt := range tests {
		if got := exitCode(tt.ws); got != tt.want {
			t.Errorf("exitCode(%#x) = %d, want %d", uint32(tt.ws), got, tt.want)
		}
	}
}

func TestStartFailureCode(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	startErr := func(name string) error {
		err := exec.Command(name).Start()
		if err == nil {
			t.Fatalf("%s started", name)
		}
		return err
	}
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"not on PATH", startErr("proa-test-no-such-command"), 127},
		{"missing path", startErr(filepath.Join(dir, "missing")), 127},
		{"ErrNotFound", &exec.Error{Name: "x", Err: exec.ErrNotFound}, 127},
		{"ENOENT", &fs.PathError{Op: "fork/exec", Path: "/x", Err: syscall.ENOENT}, 127},
		{"not executable", startErr(plain), 126},
		{"directory", startErr(dir), 126},
		{"EACCES", &fs.PathError{Op: "fork/exec", Path: "/x", Err: syscall.EACCES}, 126},
		{"ENOEXEC", &fs.PathError{Op: "fork/exec", Path: "/x", Err: syscall.ENOEXEC}, 126},
	}
	for _, tt := range tests {
		if got := startFailureCode(tt.err); got != tt.want {
			t.Errorf("%s: startFailureCode(%v) = %d, want %d", tt.name, tt.err, got, tt.want)
		}
	}
}

func TestSignalCode(t *testing.T) {
	tests := []struct {
		sig  os.Signal
		want int
	}{
		{syscall.SIGTERM, 143},
		{os.Interrupt, 130},
		{syscall.SIGHUP, 129},
		{syscall.SIGKILL, 137},
	}
	for _, tt := range tests {
		if got := signalCode(tt.sig); got != tt.want {
			t.Errorf("signalCode(%v) = %d, want %d", tt.sig, got, tt.want)
		}
	}
}

func TestExitCodePassthrough(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain")
	garbage := filepath.Join(dir, "garbage")
	if err := os.WriteFile(plain, []byte("#!/bin/sh\nexit 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(garbage, []byte{0x7f, 'E', 'L', 'F', 0, 1, 2}, 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		argv []string
		want int
	}{
		{"exit 0", childArgv(t, "exit", "0"), 0},
		{"exit 3", childArgv(t, "exit", "3"), 3},
		{"exit 255", childArgv(t, "exit", "255"), 255},
		{"SIGKILL", childArgv(t, "kill", "9"), 137},
		{"SIGTERM", childArgv(t, "kill", "15"), 143},
		{"not on PATH", []string{"proa-test-no-such-command"}, 127},
		{"missing path", []string{filepath.Join(dir, "missing")}, 127},
		{"not executable", []string{plain}, 126},
		{"directory", []string{dir}, 126},
		{"not a program", []string{garbage}, 126},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := launch(t, proaCmd(t, nil, append([]string{"--"}, tt.argv...)...))
			if got := l.exitCode(); got != tt.want {
				t.Errorf("proa -- %q exited %d, want %d; stderr:\n%s", tt.argv, got, tt.want, &l.stderr)
			}
		})
	}
}

func TestOutputPassthrough(t *testing.T) {
	tests := []struct {
		name       string
		nout, nerr int
	}{
		{"none", 0, 0},
		{"binary without newline", 1000, 777},
		{"one byte each", 1, 1},
		{"large", 1 << 20, 1<<20 + 13},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			argv := childArgv(t, "output", strconv.Itoa(tt.nout), strconv.Itoa(tt.nerr))
			l := launch(t, proaCmd(t, nil, append([]string{"--log-level", "error", "--"}, argv...)...))
			if got := l.exitCode(); got != 0 {
				t.Fatalf("exit code %d, want 0; stderr:\n%s", got, &l.stderr)
			}
			if want := outputPattern(tt.nout, 'o'); !bytes.Equal(l.stdout.Bytes(), want) {
				t.Errorf("stdout: got %d bytes, want %d exactly as written:\n%s", l.stdout.Len(), len(want), cmp.Diff(want, l.stdout.Bytes()))
			}
			if want := outputPattern(tt.nerr, 'e'); !bytes.Equal(l.stderr.Bytes(), want) {
				t.Errorf("stderr: got %d bytes, want %d exactly as written:\n%s", l.stderr.Len(), len(want), cmp.Diff(want, l.stderr.Bytes()))
			}
		})
	}
}

func TestStdinPassthrough(t *testing.T) {
	in := outputPattern(1<<20+5, 'i')
	cmd := proaCmd(t, nil, append([]string{"--log-level", "error", "--"}, childArgv(t, "cat")...)...)
	cmd.Stdin = bytes.NewReader(in)
	l := launch(t, cmd)
	if got := l.exitCode(); got != 0 {
		t.Fatalf("exit code %d, want 0; stderr:\n%s", got, &l.stderr)
	}
	if !bytes.Equal(l.stdout.Bytes(), in) {
		t.Errorf("the command read %d bytes of stdin, want the %d given to proa", l.stdout.Len(), len(in))
	}
}

func TestEnvironmentAndDirectory(t *testing.T) {
	dir := t.TempDir()
	value := "a b\nc=d\x01é"
	cmd := proaCmd(t, []string{"PROA_TEST_VALUE=" + value}, append([]string{"--log-level", "error", "--"}, childArgv(t, "env-cwd", "PROA_TEST_VALUE")...)...)
	cmd.Dir = dir
	l := launch(t, cmd)
	if got := l.exitCode(); got != 0 {
		t.Fatalf("exit code %d, want 0; stderr:\n%s", got, &l.stderr)
	}
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		t.Fatal(err)
	}
	gotValue, gotDir, _ := strings.Cut(l.stdout.String(), "\x00")
	if gotValue != value {
		t.Errorf("the command saw PROA_TEST_VALUE=%q, want %q", gotValue, value)
	}
	if gotDir != real {
		t.Errorf("the command ran in %q, want proa's working directory %q", gotDir, real)
	}
}

func TestUsageErrorNeverStartsCommand(t *testing.T) {
	tests := []struct {
		name string
		env  []string
		args []string
	}{
		{"unknown flag", nil, []string{"--bogus"}},
		{"unknown flag with a newline", nil, []string{"--bo\ngus"}},
		{"relative URL", nil, []string{"-g", "notaurl"}},
		{"bad --timeout", nil, []string{"--timeout", "-1s"}},
		{"bad PROA_TIMEOUT", []string{"PROA_TIMEOUT=soon"}, nil},
		{"bad PROA_LOG", []string{"PROA_LOG=verbose"}, nil},
		{"bad PROA_DISABLED", []string{"PROA_DISABLED=maybe"}, nil},
		{"unknown flag with PROA_DISABLED=1", []string{"PROA_DISABLED=1"}, []string{"--bogus"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			file := filepath.Join(t.TempDir(), "file")
			l := launch(t, proaCmd(t, tt.env, append(tt.args, "--", "touch", file)...))
			if got := l.exitCode(); got != exitUsage {
				t.Errorf("exit code %d, want %d", got, exitUsage)
			}
			if _, err := os.Stat(file); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("the command ran: %s exists (%v)", file, err)
			}
			if s := l.stderr.String(); !strings.HasPrefix(s, "proa: ") || strings.Count(s, "\n") != 1 || !strings.HasSuffix(s, "\n") {
				t.Errorf("stderr is not one line starting with \"proa: \":\n%s", s)
			}
			if l.stdout.Len() != 0 {
				t.Errorf("stdout: %q, want nothing", &l.stdout)
			}
		})
	}
}

func TestDisabled(t *testing.T) {
	disabled := []string{"PROA_DISABLED=1"}
	t.Run("execs the command", func(t *testing.T) {
		t.Parallel()
		file := filepath.Join(t.TempDir(), "pid")
		l := launch(t, proaCmd(t, disabled, append([]string{"--"}, childArgv(t, "pid", file, "3")...)...))
		if got := l.exitCode(); got != 3 {
			t.Errorf("exit code %d, want 3", got)
		}
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if pid := strconv.Itoa(l.cmd.Process.Pid); string(b) != pid {
			t.Errorf("the command's PID is %s, want proa's %s", b, pid)
		}
		if l.stderr.Len() != 0 || l.stdout.Len() != 0 {
			t.Errorf("proa wrote stdout %q and stderr %q, want nothing", &l.stdout, &l.stderr)
		}
	})
	for _, tt := range []struct {
		name string
		argv []string
		want int
	}{
		{"not found", []string{"proa-test-no-such-command"}, 127},
		{"directory", []string{t.TempDir()}, 126},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := launch(t, proaCmd(t, disabled, tt.argv...))
			if got := l.exitCode(); got != tt.want {
				t.Errorf("exit code %d, want %d", got, tt.want)
			}
			if s := l.stderr.String(); strings.Count(s, "\n") != 1 || !strings.HasPrefix(s, "proa: ") {
				t.Errorf("stderr is not one line starting with \"proa: \":\n%s", s)
			}
		})
	}
}

// A relative directory in PATH is searched, as sh searches it, not refused
// as Go's exec.ErrDot; with PROA_DISABLED=1 too.
func TestRelativePATHDirectory(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "proa-test-prog"), []byte("#!/bin/sh\nexit 5\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, extra := range map[string][]string{"run": nil, "PROA_DISABLED=1": {"PROA_DISABLED=1"}} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cmd := proaCmd(t, append([]string{"PATH=bin:/usr/bin:/bin"}, extra...), "--", "proa-test-prog")
			cmd.Dir = dir
			l := launch(t, cmd)
			if got := l.exitCode(); got != 5 {
				t.Errorf("proa -- proa-test-prog with PATH=bin:... exited %d, want the program's 5; stderr:\n%s", got, &l.stderr)
			}
		})
	}
}

func init() { childModes["late-term"] = childLateTerm }

// childLateTerm is proa's end: relaying stopped, then a TERM comes before
// the exit with the command's code (3).
func childLateTerm([]string) int {
	_, stop := notifySignals()
	stop()
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	time.Sleep(200 * time.Millisecond)
	return 3
}

// A TERM that comes once relaying has stopped, as proa returns the
// command's code (a second TERM from a shortened grace period, a second
// Ctrl-C), must not kill proa: the kubelet would record 143, not the code.
func TestSignalAfterRelayStopsKeepsTheExitCode(t *testing.T) {
	cmd := exec.Command(testBinary(t), "late-term")
	cmd.Env = cleanEnv("PROA_TEST_AS=child")
	l := launch(t, cmd)
	if got := l.exitCode(); got != 3 {
		t.Errorf("exit code %d, want 3", got)
	}
}
