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
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

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
	testRoles["noptrace"] = noPtraceMain
}

// noPtraceMain drops CAP_SYS_PTRACE, as container runtimes do by default,
// then executes PROA_TEST_EXEC (default: itself) as role PROA_TEST_BECOME
// (default: proa), with the same argv. Capabilities are per thread, and execve keeps the
// calling thread's: drop them on a locked thread and execute from it. As
// root, execve grants the bounding set, so drop it from there too.
func noPtraceMain() {
	runtime.LockOSThread()
	const prCapbsetDrop, capSysPtrace = 24, 19
	if _, _, errno := syscall.Syscall(syscall.SYS_PRCTL, prCapbsetDrop, capSysPtrace, 0); errno != 0 {
		fmt.Fprintln(os.Stderr, "noptrace: PR_CAPBSET_DROP:", errno)
		os.Exit(125)
	}
	hdr := struct {
		version uint32
		pid     int32
	}{version: 0x20080522} // _LINUX_CAPABILITY_VERSION_3
	var data [2]struct{ effective, permitted, inheritable uint32 }
	if _, _, errno := syscall.Syscall(syscall.SYS_CAPGET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); errno != 0 {
		fmt.Fprintln(os.Stderr, "noptrace: capget:", errno)
		os.Exit(125)
	}
	data[0].effective &^= 1 << capSysPtrace
	data[0].permitted &^= 1 << capSysPtrace
	data[0].inheritable &^= 1 << capSysPtrace
	if _, _, errno := syscall.Syscall(syscall.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); errno != 0 {
		fmt.Fprintln(os.Stderr, "noptrace: capset:", errno)
		os.Exit(125)
	}
	exe, role := os.Getenv("PROA_TEST_EXEC"), os.Getenv("PROA_TEST_BECOME")
	if exe == "" {
		exe, _ = os.Executable()
	}
	if role == "" {
		role = "proa"
	}
	env := append(slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "PROA_TEST_AS=") }), "PROA_TEST_AS="+role)
	err := syscall.Exec(exe, os.Args, env)
	fmt.Fprintln(os.Stderr, "noptrace: exec:", err)
	os.Exit(125)
}

var recordedSignals = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2}

type podResult struct {
	proaCode int
	proaLog  string
	signals  map[string][]string // per process ("envoy-0", "init", ...): signals received, in order
}

// sidecarProc is a sidecar process of the test's Pod.
type sidecarProc struct {
	Exe   string // its executable's base name: what -k matches in /proc/PID/exe
	Argv0 string // its argv[0]; default Exe
	UID   int    // its user; root when 0
}

type podOpts struct {
	sidecars []sidecarProc
	env      map[string]string // more environment for proa
	// noPtrace runs proa without CAP_SYS_PTRACE, as in a container: it
	// cannot read /proc/PID/exe of another user's process.
	noPtrace bool
	dir      chan<- string // receives the Pod's directory, if set
}

// runPod runs a PID namespace with the named sidecars and proa with args.
func runPod(t *testing.T, sidecars []string, proaArgs ...string) podResult {
	t.Helper()
	var procs []sidecarProc
	for _, name := range sidecars {
		procs = append(procs, sidecarProc{Exe: name})
	}
	return runPodWith(t, podOpts{sidecars: procs}, proaArgs...)
}

func runPodWith(t *testing.T, opts podOpts, proaArgs ...string) podResult {
	t.Helper()
	requireRoot(t)
	dir := t.TempDir()
	// Sidecars of other users must reach their executable and record files.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i, sc := range opts.sidecars {
		record := filepath.Join(dir, fmt.Sprintf("%s-%d.signals", sc.Exe, i))
		if err := os.WriteFile(record, nil, 0o666); err != nil || os.Chmod(record, 0o666) != nil {
			t.Fatal(err)
		}
		bin := filepath.Join(dir, "bin", sc.Exe)
		if _, err := os.Stat(bin); err == nil {
			continue
		}
		// The executable's base name is what -k matches: link the test
		// binary under that name.
		if err := os.Link(os.Args[0], bin); err != nil {
			copyFile(t, os.Args[0], bin)
		}
	}
	if opts.dir != nil {
		opts.dir <- dir
	}
	args, _ := json.Marshal(proaArgs)
	sidecars, _ := json.Marshal(opts.sidecars)
	proaEnv, _ := json.Marshal(opts.env)
	cmd := exec.Command(os.Args[0])
	cmd.Env = []string{"PROA_TEST_AS=podinit", "PROA_TEST_DIR=" + dir, "PROA_TEST_SIDECARS=" + string(sidecars),
		"PROA_TEST_PROA_ARGS=" + string(args), "PROA_TEST_PROA_ENV=" + string(proaEnv),
		"PROA_TEST_NO_PTRACE=" + strconv.FormatBool(opts.noPtrace), "PATH=" + os.Getenv("PATH"), "GORACE=atexit_sleep_ms=0"}
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
		res.signals[strings.TrimSuffix(filepath.Base(f), ".signals")] = slices.DeleteFunc(strings.Fields(string(b)),
			func(s string) bool { return s == "started" })
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

// -k NAME where /proc/PID/exe cannot be read: the sidecars run as other
// users (istio-proxy's 1337, a nonroot image's 65532) and proa, though root,
// lacks CAP_SYS_PTRACE, as in a container. They are found by argv[0], or by
// comm (NAME cut to 15 bytes), and signalled (CAP_KILL suffices); the rule
// that matched is logged.
func TestKillByNameWhenExeIsUnreadable(t *testing.T) {
	res := runPodWith(t, podOpts{noPtrace: true, sidecars: []sidecarProc{
		{Exe: "envoy", Argv0: "/usr/local/bin/envoy", UID: 1337},
		{Exe: "nonroot-sidecar-x", Argv0: "x", UID: 65532},
		{Exe: "other", UID: 1337},
		{Exe: "vault"},
	}}, "--no-kube", "-k", "envoy", "-k", "nonroot-sidecar-x", "-k", "vault", "--shutdown-timeout", "20s", "--", "/bin/sh", "-c", "exit 3")
	if res.proaCode != 3 {
		t.Errorf("proa exited %d, want the command's 3\n%s", res.proaCode, res.proaLog)
	}
	want := map[string][]string{"envoy-0": {"terminated"}, "nonroot-sidecar-x-1": {"terminated"}, "other-2": nil, "vault-3": {"terminated"}, "init": nil}
	if diff := cmp.Diff(want, res.signals, cmpNilEmpty); diff != "" {
		t.Errorf("signals received (-want +got):\n%s\nproa's log:\n%s", diff, res.proaLog)
	}
	for _, rule := range []string{`"name":"envoy","match":"argv0"`, `"name":"nonroot-sidecar","match":"comm"`, `"exe":"vault","name":"vault","match":"exe"`} {
		if !strings.Contains(res.proaLog, rule) {
			t.Errorf("proa's log lacks %s:\n%s", rule, res.proaLog)
		}
	}
}

// The wait for signalled processes also ends once every sidecar container
// has exited: a process that ignores the signal (a kubectl exec shell)
// must not hold proa until the deadline.
func TestKillWaitEndsWhenSidecarsExited(t *testing.T) {
	requireRoot(t)
	f := newFakeAPI(t)
	live := make(chan string, 1)
	f.answer(stream(append(recorded(t, "watch-lifecycle.jsonl")[:4], podAt(t)), live))
	env := f.env()
	env["PROA_TEST_SA_DIR"] = f.saDir
	done := make(chan podResult, 1)
	dirs := make(chan string, 1)
	start := time.Now()
	go func() {
		done <- runPodWith(t, podOpts{sidecars: []sidecarProc{{Exe: "stubborn"}}, env: env, dir: dirs},
			"-k", "stubborn", "--kill-signal", "HUP", "--shutdown-timeout", "20s", "--", "/bin/true")
	}()
	// Once proa has signalled, the envoy container exits.
	record := filepath.Join(<-dirs, "stubborn-0.signals")
	for b, _ := os.ReadFile(record); !strings.Contains(string(b), "hangup"); b, _ = os.ReadFile(record) {
		if time.Since(start) > 30*time.Second {
			t.Fatal("proa did not signal the stubborn process")
		}
		time.Sleep(20 * time.Millisecond)
	}
	live <- podAt(t, envoyTerminated)
	var res podResult
	select {
	case res = <-done:
	case <-time.After(40 * time.Second):
		t.Fatal("proa still running")
	}
	if got := res.signals["stubborn-0"]; !slices.Equal(got, []string{"hangup"}) {
		t.Errorf("stubborn got %q, want [hangup]\n%s", got, res.proaLog)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("proa took %s: it waited for the signalled process after the sidecar containers had exited\n%s", d, res.proaLog)
	}
	if !strings.Contains(res.proaLog, `"msg":"sidecars exited"`) {
		t.Errorf("no sidecars exited line:\n%s", res.proaLog)
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
	var procs []sidecarProc
	json.Unmarshal([]byte(os.Getenv("PROA_TEST_SIDECARS")), &procs)
	for i, sc := range procs {
		id := fmt.Sprintf("%s-%d", sc.Exe, i)
		argv0 := sc.Argv0
		if argv0 == "" {
			argv0 = sc.Exe
		}
		attr := &os.ProcAttr{
			Env:   []string{"PROA_TEST_AS=sidecar", "PROA_TEST_RECORD=" + filepath.Join(dir, id+".signals")},
			Files: []*os.File{nil, os.Stdout, os.Stderr},
		}
		exe := filepath.Join(dir, "bin", sc.Exe)
		switch {
		case sc.UID != 0: // no capabilities at all
			attr.Sys = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(sc.UID), Gid: uint32(sc.UID)}}
		case os.Getenv("PROA_TEST_NO_PTRACE") == "true": // the same capabilities as proa's
			self, _ := os.Executable()
			attr.Env[0] = "PROA_TEST_AS=noptrace"
			attr.Env = append(attr.Env, "PROA_TEST_BECOME=sidecar", "PROA_TEST_EXEC="+exe)
			exe = self
		}
		p, err := os.StartProcess(exe, []string{argv0}, attr)
		if err != nil {
			fail(err)
		}
		sidecars = append(sidecars, p)
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			if b, _ := os.ReadFile(filepath.Join(dir, id+".signals")); strings.Contains(string(b), "started") {
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
	env := []string{"PROA_TEST_AS=proa", "PATH=" + os.Getenv("PATH"), "GORACE=atexit_sleep_ms=0"}
	if os.Getenv("PROA_TEST_NO_PTRACE") == "true" {
		env[0] = "PROA_TEST_AS=noptrace"
	}
	var more map[string]string
	json.Unmarshal([]byte(os.Getenv("PROA_TEST_PROA_ENV")), &more)
	for k, v := range more {
		env = append(env, k+"="+v)
	}
	proa, err := os.StartProcess(self, append([]string{"proa"}, args...), &os.ProcAttr{
		Env:   env,
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
	fmt.Fprintln(f, "started")
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
