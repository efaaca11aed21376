package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// proaRun is proa running as a real process (the test binary as proa)
// against a fake API server.
type proaRun struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{}
}

func startProa(t *testing.T, f *fakeAPI, extraEnv map[string]string, args ...string) *proaRun {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	// GORACE: a race-enabled binary otherwise sleeps a second before exiting.
	cmd.Env = []string{"PROA_TEST_AS=proa", "PATH=" + os.Getenv("PATH"), "PROA_LOG=debug", "GORACE=atexit_sleep_ms=0"}
	if f != nil {
		cmd.Env = append(cmd.Env, "PROA_TEST_SA_DIR="+f.saDir)
		for k, v := range f.env() {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	for k, v := range extraEnv {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	p := &proaRun{cmd: cmd, stderr: new(syncBuffer), done: make(chan struct{})}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("proa's stderr:\n%s", p.stderr)
		}
	})
	return p
}

func (p *proaRun) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("proa still running after 30s:\n%s", p.stderr)
	}
	return p.cmd.ProcessState.ExitCode()
}

// waitLog waits until proa has logged msg.
func (p *proaRun) waitLog(t *testing.T, msg string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(p.stderr.String(), `"msg":"`+msg+`"`) {
		if time.Now().After(deadline) {
			t.Fatalf("proa did not log %q:\n%s", msg, p.stderr)
		}
		select {
		case <-p.done:
			if !strings.Contains(p.stderr.String(), `"msg":"`+msg+`"`) {
				t.Fatalf("proa exited without logging %q:\n%s", msg, p.stderr)
			}
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// markerCommand is a command that records that it ran, then exits with code.
func markerCommand(t *testing.T, code string) (marker string, argv []string) {
	marker = filepath.Join(t.TempDir(), "ran")
	return marker, []string{"/bin/sh", "-c", "echo ran > " + marker + "; exit " + code}
}

func ran(marker string) bool {
	_, err := os.Stat(marker)
	return err == nil
}

// edit changes a recorded event's object.
func edit(t *testing.T, line string, f func(obj map[string]any)) string {
	var ev map[string]any
	if err := json.Unmarshal([]byte(line), &ev); err != nil {
		t.Fatal(err)
	}
	f(ev["object"].(map[string]any))
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestRunLifecycle(t *testing.T) {
	f := newFakeAPI(t)
	lines := recorded(t, "watch-lifecycle.jsonl")
	live := make(chan string, 1)
	f.answer(stream(lines[:4], live))
	q := newQuitServer(t)
	q.onQuit = func() {
		// envoy exits once asked both ways: proa rightly cancels a request
		// still under way once the sidecars have exited, so exiting at the
		// first would make the test depend on which request came first.
		asked := map[string]bool{}
		for _, r := range q.requests() {
			asked[r.Method+" "+r.URL.Path] = true
		}
		if !asked["POST /quitquitquit"] || !asked["GET /quit"] {
			return
		}
		select {
		case live <- lines[5]:
		default:
		}
	}
	marker, argv := markerCommand(t, "7")
	p := startProa(t, f, nil, append([]string{"-p", q.URL + "/quitquitquit", "-g", q.URL + "/quit", "--"}, argv...)...)

	p.waitLog(t, "waiting for sidecars")
	if ran(marker) {
		t.Fatal("the command ran before the sidecars were ready")
	}
	live <- lines[4] // envoy ready
	if code := p.wait(t); code != 7 {
		t.Errorf("exit code %d, want the command's 7", code)
	}
	if !ran(marker) {
		t.Error("the command did not run")
	}
	methods := map[string]bool{}
	var got []string
	for _, r := range q.requests() {
		methods[r.Method+" "+r.URL.Path] = true
		got = append(got, r.Method+" "+r.URL.Path)
	}
	if !methods["POST /quitquitquit"] || !methods["GET /quit"] {
		t.Errorf("shutdown requests %q, want POST /quitquitquit and GET /quit", got)
	}
	for _, msg := range []string{"starting", "own container", "sidecars ready", "running command", "command exited", "sending shutdown requests", "sidecars exited", "exiting"} {
		if !strings.Contains(p.stderr.String(), `"msg":"`+msg+`"`) {
			t.Errorf("proa did not log %q", msg)
		}
	}
	if reqs := f.got(); len(reqs) != 1 {
		t.Errorf("proa made %d API requests for the whole lifecycle, want exactly 1: %+v", len(reqs), reqs)
	}
}

func TestRunSignalWhileWaiting(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			f := newFakeAPI(t)
			f.answer(stream(recorded(t, "watch-lifecycle.jsonl")[:4], make(chan string)))
			q := newQuitServer(t)
			marker, argv := markerCommand(t, "0")
			p := startProa(t, f, nil, append([]string{"-p", q.URL, "--shutdown-timeout", "1s", "--"}, argv...)...)
			p.waitLog(t, "waiting for sidecars")
			p.cmd.Process.Signal(syscall.SIGHUP) // not a reason to stop waiting
			p.cmd.Process.Signal(sig)
			if code, want := p.wait(t), 128+int(sig); code != want {
				t.Errorf("exit code %d, want %d", code, want)
			}
			if ran(marker) {
				t.Error("the command ran after proa was told to stop")
			}
			if len(q.requests()) != 1 {
				t.Errorf("shutdown made %d requests, want 1: shutdown still runs", len(q.requests()))
			}
		})
	}
}

func TestRunStartupFailures(t *testing.T) {
	lines := recorded(t, "watch-lifecycle.jsonl")
	envoyFailed := edit(t, lines[3], func(pod map[string]any) {
		for _, s := range pod["status"].(map[string]any)["containerStatuses"].([]any) {
			if s := s.(map[string]any); s["name"] == "envoy" {
				s["state"] = map[string]any{"terminated": map[string]any{"exitCode": 1, "reason": "Error"}}
			}
		}
	})
	tests := []struct {
		name    string
		answer  func(f *fakeAPI)
		saDir   func(f *fakeAPI)
		args    []string
		wantLog string
	}{
		{name: "sidecar failed under restartPolicy Never",
			answer:  func(f *fakeAPI) { f.answer(stream([]string{lines[0], envoyFailed}, make(chan string))) },
			wantLog: "sidecar envoy terminated with exit code 1 before it was ready, and restartPolicy Never will not restart it"},
		{name: "--timeout", args: []string{"--timeout", "300ms"},
			answer:  func(f *fakeAPI) { f.answer(stream(lines[:4], make(chan string))) },
			wantLog: "not ready within --timeout 300ms"},
		{name: "pod not found",
			answer:  func(f *fakeAPI) { f.answer(stream(recorded(t, "watch-absent.jsonl"), make(chan string))) },
			wantLog: "pod rec3/job-1 not found: set POD_NAME from the downward API"},
		{name: "unknown --container", args: []string{"--container", "app"},
			answer:  func(f *fakeAPI) { f.answer(stream(lines[:1], make(chan string))) },
			wantLog: `--container names container \"app\", but Pod rec3/job-1 has only envoy, main`},
		{name: "pod deleted while waiting",
			answer: func(f *fakeAPI) {
				f.answer(stream([]string{lines[0], strings.Replace(lines[3], `"type":"MODIFIED"`, `"type":"DELETED"`, 1)}, make(chan string)))
			},
			wantLog: "pod rec3/job-1 was deleted"},
		{name: "no CA certificate",
			saDir:   func(f *fakeAPI) { os.Remove(filepath.Join(f.saDir, "ca.crt")) },
			wantLog: "reading the API server's CA"},
		{name: "no token",
			saDir:   func(f *fakeAPI) { os.Remove(filepath.Join(f.saDir, "token")) },
			wantLog: "reading the service-account token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeAPI(t)
			if tt.answer != nil {
				tt.answer(f)
			}
			if tt.saDir != nil {
				tt.saDir(f)
			}
			q := newQuitServer(t)
			marker, argv := markerCommand(t, "0")
			args := append(append(tt.args, "-p", q.URL, "--shutdown-timeout", "1s", "--"), argv...)
			p := startProa(t, f, nil, args...)
			if code := p.wait(t); code != exitUnavailable {
				t.Errorf("exit code %d, want 69", code)
			}
			if ran(marker) {
				t.Error("the command ran")
			}
			if !strings.Contains(p.stderr.String(), tt.wantLog) {
				t.Errorf("stderr lacks %q:\n%s", tt.wantLog, p.stderr)
			}
			// Shutdown runs after a startup failure, and sends the request
			// even when no sidecar is left running (SPEC §6 step 1).
			if len(q.requests()) != 1 {
				t.Errorf("shutdown made %d requests, want 1", len(q.requests()))
			}
		})
	}
}
