package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestNoKubernetesAtAll: no API server, no service account, no RBAC. proa
// waits for a local HTTP server that becomes ready after a delay and for a
// TCP port, runs the command, POSTs the quit endpoint and exits with the
// command's code.
func TestNoKubernetesAtAll(t *testing.T) {
	var healthy atomic.Bool
	var readyAt atomic.Int64
	health := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !healthy.Load() {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	}))
	defer health.Close()
	time.AfterFunc(500*time.Millisecond, func() { readyAt.Store(time.Now().UnixNano()); healthy.Store(true) })
	tcp := closedAddr(t)
	time.AfterFunc(300*time.Millisecond, func() {
		l, err := net.Listen("tcp", tcp)
		if err == nil {
			t.Cleanup(func() { l.Close() })
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			}()
		}
	})
	q := newQuitServer(t)
	dir := t.TempDir()
	marker := filepath.Join(dir, "ran")
	// date +%s%N: when the command started.
	p := startProa(t, nil, nil, "--wait-http", health.URL+"/healthz", "--wait-tcp", tcp, "-p", q.URL+"/quit", "--",
		"/bin/sh", "-c", "date +%s%N > "+marker+"; exit 5")
	if code := p.wait(t); code != 5 {
		t.Errorf("exit code %d, want 5", code)
	}
	b, err := os.ReadFile(marker)
	if err != nil {
		t.Fatal("the command did not run")
	}
	var started int64
	fmt.Sscan(string(b), &started)
	if ready := readyAt.Load(); ready == 0 || started < ready {
		t.Errorf("the command started before the HTTP check passed")
	}
	if reqs := q.requests(); len(reqs) != 1 || reqs[0].Method != "POST" {
		t.Errorf("quit requests %v, want one POST", reqs)
	}
	log := p.stderr.String()
	for _, want := range []string{"KUBERNETES_SERVICE_HOST is unset", `"not_ready":["GET ` + health.URL + `/healthz: checking","TCP ` + tcp, "sidecars ready"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
}

func closedAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func TestConditionsProgressNamesLastError(t *testing.T) {
	c := &config{waitTCP: []string{closedAddr(t)}, waitHTTP: []string{"http://" + closedAddr(t) + "/ready"}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cs := startConditions(ctx, c)
	deadline := time.Now().Add(10 * time.Second)
	for {
		pending, changed := cs.current()
		if len(pending) == 2 && strings.Contains(strings.Join(pending, "|"), "connection refused") &&
			!strings.Contains(strings.Join(pending, "|"), "checking") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pending conditions %q, want both with connection refused", pending)
		}
		select {
		case <-changed:
		case <-time.After(time.Second):
		}
	}
}

func TestReadyAddr(t *testing.T) {
	addr := closedAddr(t)
	var healthy atomic.Bool
	health := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !healthy.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer health.Close()
	release := make(chan struct{})
	q := newQuitServer(t)
	q.onQuit = func() { <-release } // hold proa in its shutdown phase
	dir := t.TempDir()
	running, finish := filepath.Join(dir, "running"), filepath.Join(dir, "finish")
	p := startProa(t, nil, nil, "--ready-addr", addr, "--wait-http", health.URL, "-g", q.URL, "--",
		"/bin/sh", "-c", fmt.Sprintf("touch %s; while [ ! -e %s ]; do sleep 0.01; done", running, finish))

	get := func(path string) int {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			return 0
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	eventually := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !ok(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s\n%s", what, p.stderr)
			}
		}
	}
	eventually("the probe server", func() bool { return get("/live") == 200 })
	if code := get("/ready"); code != 503 {
		t.Errorf("/ready before the command = %d, want 503", code)
	}
	if code := get("/other"); code != 404 {
		t.Errorf("/other = %d, want 404", code)
	}
	if code := get("/live?verbose=1"); code != 200 {
		t.Errorf("/live?verbose=1 = %d, want 200", code)
	}
	if resp, err := http.Post("http://"+addr+"/ready", "text/plain", nil); err != nil || resp.StatusCode != 405 {
		t.Errorf("POST /ready = %v, %v; want 405", resp, err)
	} else {
		resp.Body.Close()
	}
	healthy.Store(true)
	eventually("the command", func() bool { _, err := os.Stat(running); return err == nil })
	if code := get("/ready"); code != 200 {
		t.Errorf("/ready while the command runs = %d, want 200", code)
	}
	os.WriteFile(finish, nil, 0o644)
	eventually("the shutdown request", func() bool {
		return len(q.requests()) > 0 || len(q.arrived) > 0 || strings.Contains(p.stderr.String(), "sending shutdown requests")
	})
	if code := get("/ready"); code != 503 {
		t.Errorf("/ready after the command = %d, want 503", code)
	}
	close(release)
	if code := p.wait(t); code != 0 {
		t.Errorf("exit code %d", code)
	}
	if code := get("/live"); code != 0 {
		t.Errorf("/live after proa exited = %d, want the listener closed", code)
	}
}

func TestReadyAddrInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	marker, argv := markerCommand(t, "0")
	p := startProa(t, nil, nil, append([]string{"--ready-addr", l.Addr().String(), "--"}, argv...)...)
	if code := p.wait(t); code != exitUnavailable {
		t.Errorf("exit code %d, want 69", code)
	}
	if ran(marker) || !strings.Contains(p.stderr.String(), "address already in use") {
		t.Errorf("want the command not run and the bind error logged:\n%s", p.stderr)
	}
}

func TestInstall(t *testing.T) {
	dir := t.TempDir()
	run := func(args ...string) (int, string) {
		cmd := exec.Command(os.Args[0], args...)
		cmd.Env = []string{"PROA_TEST_AS=proa", "GORACE=atexit_sleep_ms=0"}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		cmd.Run()
		return cmd.ProcessState.ExitCode(), stderr.String()
	}
	// One line says what was installed where; a failure names the
	// directory and the cause, never a temporary file.
	if code, stderr := run("--install", dir); code != 0 || strings.Count(stderr, "\n") != 1 ||
		!strings.Contains(stderr, `"msg":"installed"`) || !strings.Contains(stderr, filepath.Join(dir, "proa")) {
		t.Fatalf("--install: exit %d, stderr %q; want 0 and one line naming %s", code, stderr, filepath.Join(dir, "proa"))
	}
	st, err := os.Stat(filepath.Join(dir, "proa"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o755 {
		t.Errorf("mode %v, want 0755", st.Mode())
	}
	want, _ := os.ReadFile(os.Args[0])
	got, _ := os.ReadFile(filepath.Join(dir, "proa"))
	if !bytes.Equal(want, got) {
		t.Error("the installed copy differs from the executable")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("left %d files in %s, want only proa", len(entries), dir)
	}
	// Installing again replaces the file in place.
	if code, _ := run("--install", dir); code != 0 {
		t.Errorf("second --install: exit %d", code)
	}
	missing := filepath.Join(dir, "missing")
	if code, stderr := run("--install", missing); code != 1 || strings.Count(stderr, "\n") != 1 ||
		!strings.Contains(stderr, "installing proa into "+missing+": no such file or directory") || strings.Contains(stderr, ".proa-") {
		t.Errorf("--install into a missing directory: exit %d, stderr %q; want 1 and one line with the directory and the reason", code, stderr)
	}
	if code, stderr := run("--install", dir, "--", "app"); code != exitUsage || strings.Count(stderr, "\n") != 1 {
		t.Errorf("--install with a command: exit %d, stderr %q; want 2 and one line", code, stderr)
	}
}

// TestPeerMainContainers: with --sidecar, of the main containers still
// running, the last in the Pod's spec stops the sidecars, after the others
// have terminated; the others leave at once.
func TestPeerMainContainers(t *testing.T) {
	lines := recorded(t, "watch-lifecycle.jsonl")
	// The Pod's regular containers are main, envoy (the sidecar, running)
	// and worker, added here; mainState and workerState are their states.
	podWith := func(mainState, workerState string) string {
		return edit(t, lines[4], func(pod map[string]any) {
			spec := pod["spec"].(map[string]any)
			spec["containers"] = append(spec["containers"].([]any), map[string]any{"name": "worker", "image": "example/worker:1"})
			st := pod["status"].(map[string]any)
			statuses := st["containerStatuses"].([]any)
			for _, s := range statuses {
				if s := s.(map[string]any); s["name"] == "main" {
					s["state"] = map[string]any{mainState: map[string]any{"exitCode": 0}}
				}
			}
			st["containerStatuses"] = append(statuses, map[string]any{
				"name": "worker", "ready": false, "restartCount": 0, "image": "example/worker:1", "imageID": "",
				"state": map[string]any{workerState: map[string]any{"exitCode": 0}}})
		})
	}
	tests := []struct {
		name     string
		self     string
		events   []string
		later    string // sent 100 ms into the shutdown
		signal   bool   // SIGTERM 100 ms into the shutdown
		stopping bool   // a TERM came before the shutdown: the Pod is being stopped
		wantQuit bool
		wantLog  string
	}{
		{"a later main container still runs: leave it the sidecars", "main",
			[]string{podWith("running", "running")}, "", false, false, false, "a main container listed after this one is still running"},
		{"the later one has terminated: stop the sidecars", "main",
			[]string{podWith("running", "terminated")}, "", false, false, true, "sending shutdown requests"},
		{"the last one waits for the earlier one, then stops the sidecars", "worker",
			[]string{podWith("running", "running")}, podWith("terminated", "running"), false, false, true, "waiting for the other main containers"},
		{"finishing together: the last one still stops the sidecars", "worker",
			[]string{podWith("running", "running")}, podWith("terminated", "running"), false, false, true, "sending shutdown requests"},
		{"SIGTERM ends the wait for the others", "worker",
			[]string{podWith("running", "running")}, "", true, false, true, "stopped waiting for the other main containers"},
		{"the Pod is being stopped: no wait for the others", "worker",
			[]string{podWith("running", "running")}, "", false, true, true, "sending shutdown requests"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeAPI(t)
			live := make(chan string, 1)
			f.answer(stream(tt.events, live))
			w, _ := watchPod(t, f, "")
			waitFor(t, w, "the pod", func(s podState) bool { return s.pod != nil })
			sigs := &signals{c: make(chan os.Signal, 1)}
			if tt.stopping {
				sigs.termAt.Store(time.Now().UnixNano())
			}
			if tt.later != "" {
				time.AfterFunc(100*time.Millisecond, func() { live <- tt.later })
			}
			if tt.signal {
				time.AfterFunc(100*time.Millisecond, func() { sigs.c <- syscall.SIGTERM })
			}
			q := newQuitServer(t)
			c := &config{sidecars: []string{"envoy"}, postURLs: []string{q.URL}, shutdownTimeout: 300 * time.Millisecond, shutdownTimeoutOK: true}
			logs := new(syncBuffer)
			done := make(chan struct{})
			go func() {
				shutdown(context.Background(), c, w, tt.self, 0, sigs, slog.New(slog.NewJSONHandler(logs, nil)))
				close(done)
			}()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				t.Fatalf("shutdown still waiting:\n%s", logs)
			}
			if got := len(q.requests()) > 0; got != tt.wantQuit {
				t.Errorf("shutdown request sent: %v, want %v\n%s", got, tt.wantQuit, logs)
			}
			if !strings.Contains(logs.String(), tt.wantLog) {
				t.Errorf("logs lack %q:\n%s", tt.wantLog, logs)
			}
		})
	}
}

func TestRunningPeers(t *testing.T) {
	p := mkpod(t, "Never", "a,b,proxy,c,d", "", `"a":`+running+`,"b":`+running+`,"c":`+exited0+`,"d":`+creating)
	tests := []struct {
		self          string
		later, others []string
	}{
		{"a", []string{"b", "d"}, nil},
		{"b", []string{"d"}, []string{"a"}},
		{"d", nil, []string{"a", "b"}},
		{"c", []string{"d"}, []string{"a", "b"}},
	}
	for _, tt := range tests {
		later, others := runningPeers(p, tt.self, []string{"proxy"})
		if !cmp.Equal(later, tt.later) || !cmp.Equal(others, tt.others) {
			t.Errorf("runningPeers(%s) = %q, %q; want %q, %q", tt.self, later, others, tt.later, tt.others)
		}
	}
}

// TestProgressLog: while it waits, proa says every progressEvery which
// sidecars are not ready and why, with the time elapsed.
func TestProgressLog(t *testing.T) {
	saved := progressEvery
	progressEvery = 100 * time.Millisecond
	t.Cleanup(func() { progressEvery = saved })
	f := newFakeAPI(t)
	f.answer(stream(recorded(t, "watch-lifecycle.jsonl")[:4], make(chan string)))
	w, _ := watchPod(t, f, "")
	logs := new(syncBuffer)
	c := &config{timeout: 550 * time.Millisecond, mountinfo: "/nonexistent"}
	code, self, ok := waitReady(context.Background(), c, w, startConditions(context.Background(), c), nil, slog.New(slog.NewJSONHandler(logs, nil)))
	if ok || code != exitUnavailable || self != "main" {
		t.Errorf("waitReady = %d, %q, %v; want 69 after --timeout", code, self, ok)
	}
	progress := strings.Count(logs.String(), `"msg":"waiting for sidecars","not_ready":["envoy: running, not ready"],"elapsed"`)
	if progress < 3 {
		t.Errorf("%d progress lines in 550ms at one per 100ms:\n%s", progress, logs)
	}
}
