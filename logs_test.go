package main

import (
	"encoding/json"
	"strings"
	"syscall"
	"testing"
	"time"
)

// logLines decodes proa's JSON log lines by message.
func logLines(t *testing.T, stderr string) map[string][]map[string]any {
	t.Helper()
	out := map[string][]map[string]any{}
	for _, l := range strings.Split(strings.TrimSpace(stderr), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not a JSON log line: %q", l)
		}
		msg, _ := m["msg"].(string)
		out[msg] = append(out[msg], m)
	}
	return out
}

// SPEC §7: one line tells the story; the command's arguments (secrets the
// kubelet expanded from $(VAR)) only at debug; a failed request names its
// URL once; signals as people write them.
func TestLogsTellTheStory(t *testing.T) {
	const secret = "--password=hunter2"
	argv := []string{"/bin/sh", "-c", "sleep 0.2; exit 3", "sh", secret}
	args := append([]string{"-p", "http://127.0.0.1:1/quitquitquit", "--"}, argv...)

	p := startProa(t, nil, map[string]string{"PROA_LOG": "info"}, args...)
	if code := p.wait(t); code != 3 {
		t.Fatalf("exit code %d, want 3", code)
	}
	stderr := p.stderr.String()
	if strings.Contains(stderr, "hunter2") {
		t.Errorf("the command's arguments were logged at info:\n%s", stderr)
	}
	logs := logLines(t, stderr)
	for _, msg := range []string{"starting", "running command"} {
		if len(logs[msg]) != 1 || logs[msg][0]["command"] != "/bin/sh" {
			t.Errorf("%q: %v, want one line with command /bin/sh", msg, logs[msg])
		}
	}
	failed := logs["shutdown request failed"]
	if len(failed) != 1 {
		t.Fatalf("shutdown request failed: %v, want one line", failed)
	}
	if e, _ := failed[0]["err"].(string); strings.Contains(e, "127.0.0.1:1/quitquitquit") || !strings.Contains(e, "connection refused") {
		t.Errorf("err %q: want the cause without the URL, which has a field of its own", e)
	}
	exiting := logs["exiting"]
	if len(exiting) != 1 {
		t.Fatalf("exiting: %v, want one line", exiting)
	}
	if exiting[0]["code"] != 3.0 {
		t.Errorf("exiting: code %v, want 3", exiting[0]["code"])
	}
	for field, least := range map[string]time.Duration{"waiting": 0, "running": 200 * time.Millisecond, "shutting_down": 0} {
		s, _ := exiting[0][field].(string)
		d, err := time.ParseDuration(s)
		if err != nil || d < least {
			t.Errorf("exiting: %s = %q, want a duration of at least %s", field, s, least)
		}
	}

	p = startProa(t, nil, map[string]string{"PROA_LOG": "debug"}, args...)
	p.wait(t)
	if n := strings.Count(p.stderr.String(), "hunter2"); n != 1 {
		t.Errorf("the whole command line is logged %d times at debug, want once:\n%s", n, p.stderr)
	}
}

func TestLogsNameSignals(t *testing.T) {
	p := startProa(t, nil, map[string]string{"PROA_LOG": "info"}, "--", "/bin/sh", "-c", "kill -KILL $$")
	if code := p.wait(t); code != 137 {
		t.Fatalf("exit code %d, want 137", code)
	}
	exited := logLines(t, p.stderr.String())["command exited"]
	if len(exited) != 1 || exited[0]["signal"] != "SIGKILL" {
		t.Errorf("command exited: %v, want signal SIGKILL", exited)
	}
	for _, tt := range []struct {
		sig  int
		want string
	}{{15, "SIGTERM"}, {2, "SIGINT"}, {28, "SIGWINCH"}, {64, "signal 64"}} {
		if got := signalName(sysSignal(tt.sig)); got != tt.want {
			t.Errorf("signalName(%d) = %q, want %q", tt.sig, got, tt.want)
		}
	}
}

func sysSignal(n int) syscall.Signal { return syscall.Signal(n) }
