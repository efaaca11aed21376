package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// These tests give proa a Pod-like PID namespace of its own, as
// shareProcessNamespace: true does: the test binary becomes its PID 1 (like
// the Pod's pause process), starts sidecar processes under chosen executable
// names, then starts proa in kill mode. Nothing outside that namespace can
// be signalled: it has its own /proc and sees nothing else.

func init() {
	testRoles["podinit"] = podInitMain
	testRoles["sidecar"] = sidecarMain
}

var recordedSignals = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2}

type podResult struct {
	proaCode int
	proaLog  string
	signals  map[string][]string // per process ("envoy-0", "init", ...): signals received, in order
}

// runPod runs a PID namespace with the named sidecars and proa with args.
func runPod(t *testing.T, sidecars []string, proaArgs ...string) podResult {
	t.Helper()
	requireRoot(t)
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range sidecars {
		bin := filepath.Join(dir, "bin", name)
		if _, err := os.Stat(bin); err == nil {
			continue
		}
		// The executable's base name is what -k matches: link the test
		// binary under that name.
		if err := os.Link(os.Args[0], bin); err != nil {
			copyFile(t, os.Args[0], bin)
		}
	}
	args, _ := json.Marshal(proaArgs)
	cmd := exec.Command(os.Args[0])
	cmd.Env = []string{"PROA_TEST_AS=podinit", "PROA_TEST_DIR=" + dir, "PROA_TEST_SIDECARS=" + strings.Join(sidecars, ","),
		"PROA_TEST_PROA_ARGS=" + string(args), "PATH=" + os.Getenv("PATH"), "GORACE=atexit_sleep_ms=0"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID, Unshareflags: syscall.CLONE_NEWNS}
	out, err := runWithTimeout(cmd, 60*time.Second)
	if err != nil {
		t.Fatalf("pod init: %v\n%s", err, out)
	}
	res := podResult{signals: map[string][]string{}}
	code, err := os.ReadFile(filepath.Join(dir, "proa.code"))
	if err != nil {
		t.Fatalf("proa did not finish: %v\npod init's output:\n%s", err, out)
	}
	res.proaCode, _ = strconv.Atoi(string(code))
	log, _ := os.ReadFile(filepath.Join(dir, "proa.log"))
	res.proaLog = string(log)
	files, _ := filepath.Glob(filepath.Join(dir, "*.signals"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		res.signals[strings.TrimSuffix(filepath.Base(f), ".signals")] = strings.Fields(string(b))
	}
	return res
}

func copyFile(t *testing.T, from, to string) {
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
}

func runWithTimeout(cmd *exec.Cmd, d time.Duration) ([]byte, error) {
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return []byte(out.String()), err
	case <-time.After(d):
		cmd.Process.Kill() // PID 1 of the namespace: the kernel kills the rest
		<-done
		return []byte(out.String()), fmt.Errorf("still running after %s", d)
	}
}

func TestKillByNameInPIDNamespace(t *testing.T) {
	res := runPod(t, []string{"envoy", "envoy", "vault", "other"},
		"--no-kube", "-k", "envoy", "--kill", "vault", "--shutdown-timeout", "20s", "--", "/bin/sh", "-c", "exit 3")
	if res.proaCode != 3 {
		t.Errorf("proa exited %d, want the command's 3\n%s", res.proaCode, res.proaLog)
	}
	want := map[string][]string{
		"envoy-0": {"terminated"}, "envoy-1": {"terminated"}, "vault-2": {"terminated"},
		"other-3": nil, "init": nil,
	}
	if diff := cmp.Diff(want, res.signals, cmpNilEmpty); diff != "" {
		t.Errorf("signals received (-want +got):\n%s\nproa's log:\n%s", diff, res.proaLog)
	}
	if !strings.Contains(res.proaLog, `"msg":"signalled processes exited"`) {
		t.Errorf("proa did not wait for the signalled processes:\n%s", res.proaLog)
	}
}

func TestKillAllInPIDNamespace(t *testing.T) {
	res := runPod(t, []string{"envoy", "vault", "other"},
		"--no-kube", "-K", "--kill-signal", "INT", "--shutdown-timeout", "20s", "--", "/bin/sh", "-c", "exit 4")
	if res.proaCode != 4 {
		t.Errorf("proa exited %d, want the command's 4\n%s", res.proaCode, res.proaLog)
	}
	want := map[string][]string{"envoy-0": {"interrupt"}, "vault-1": {"interrupt"}, "other-2": {"interrupt"}, "init": nil}
	if diff := cmp.Diff(want, res.signals, cmpNilEmpty); diff != "" {
		t.Errorf("signals received (-want +got):\n%s\nproa's log:\n%s", diff, res.proaLog)
	}
}

func TestKillReportsProcessesThatStay(t *testing.T) {
	res := runPod(t, []string{"stubborn"},
		"--no-kube", "-k", "stubborn", "--kill-signal", "HUP", "--shutdown-timeout", "500ms", "--", "/bin/true")
	if res.proaCode != 0 {
		t.Errorf("proa exited %d, want 0", res.proaCode)
	}
	if got := res.signals["stubborn-0"]; !slices.Equal(got, []string{"hangup"}) {
		t.Errorf("stubborn got %q, want [hangup]", got)
	}
	if !strings.Contains(res.proaLog, `"msg":"signalled processes still running at the shutdown deadline"`) {
		t.Errorf("proa did not report the process that stayed:\n%s", res.proaLog)
	}
}

var cmpNilEmpty = cmp.Transformer("nilEmpty", func(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
})

// podInitMain is PID 1 of the test's PID namespace.
func podInitMain() {
	dir := os.Getenv("PROA_TEST_DIR")
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "pod init:", err)
		os.Exit(1)
	}
	// Keep the new /proc out of the parent namespace, then mount it.
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		fail(err)
	}
	if err := syscall.Mount("proc", "/proc", "proc", 0, ""); err != nil {
		fail(err)
	}
	go recordSignals(filepath.Join(dir, "init.signals"))

	var sidecars []*os.Process
	for i, name := range strings.Split(os.Getenv("PROA_TEST_SIDECARS"), ",") {
		id := fmt.Sprintf("%s-%d", name, i)
		p, err := os.StartProcess(filepath.Join(dir, "bin", name), []string{name}, &os.ProcAttr{
			Env:   []string{"PROA_TEST_AS=sidecar", "PROA_TEST_RECORD=" + filepath.Join(dir, id+".signals")},
			Files: []*os.File{nil, os.Stdout, os.Stderr},
		})
		if err != nil {
			fail(err)
		}
		sidecars = append(sidecars, p)
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			if _, err := os.Stat(filepath.Join(dir, id+".signals")); err == nil {
				break
			}
			if time.Now().After(deadline) {
				fail(errors.New(id + " did not start"))
			}
		}
	}

	var args []string
	json.Unmarshal([]byte(os.Getenv("PROA_TEST_PROA_ARGS")), &args)
	logFile, err := os.Create(filepath.Join(dir, "proa.log"))
	if err != nil {
		fail(err)
	}
	self, _ := os.Executable()
	proa, err := os.StartProcess(self, append([]string{"proa"}, args...), &os.ProcAttr{
		Env:   []string{"PROA_TEST_AS=proa", "PATH=" + os.Getenv("PATH"), "GORACE=atexit_sleep_ms=0"},
		Files: []*os.File{nil, os.Stdout, logFile},
	})
	if err != nil {
		fail(err)
	}
	// As PID 1, reap everything; note proa's status.
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			fail(err)
		}
		if pid == proa.Pid {
			os.WriteFile(filepath.Join(dir, "proa.code"), []byte(strconv.Itoa(exitCode(ws))), 0o644)
			break
		}
	}
	for _, p := range sidecars {
		p.Kill() // ours; already gone for those proa stopped
	}
	os.Exit(0)
}

// recordSignals appends every recorded signal's name to file.
func recordSignals(file string) {
	c := make(chan os.Signal, 16)
	signal.Notify(c, recordedSignals...)
	f, err := os.OpenFile(file, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		panic(err)
	}
	for sig := range c {
		fmt.Fprintln(f, strings.ReplaceAll(sig.String(), " ", "_"))
	}
}

// sidecarMain is a multi-threaded sidecar: it records every signal and
// exits on TERM or INT, after a pause that would catch a second delivery (a
// signal sent once per thread instead of once per process).
func sidecarMain() {
	c := make(chan os.Signal, 16)
	signal.Notify(c, recordedSignals...)
	f, err := os.OpenFile(os.Getenv("PROA_TEST_RECORD"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		panic(err)
	}
	timeout := time.After(60 * time.Second)
	for {
		select {
		case sig := <-c:
			fmt.Fprintln(f, strings.ReplaceAll(sig.String(), " ", "_"))
			if sig == syscall.SIGTERM || sig == syscall.SIGINT {
				time.Sleep(300 * time.Millisecond)
				for len(c) > 0 {
					fmt.Fprintln(f, strings.ReplaceAll((<-c).String(), " ", "_"))
				}
				os.Exit(0)
			}
		case <-timeout:
			os.Exit(1)
		}
	}
}
