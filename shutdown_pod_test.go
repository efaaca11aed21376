package main

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Shutdown as proa does it in a Pod (SPEC §6), with proa running as a real
// process against the fake API server: the recorded Pod, changed as each
// test needs, with envoy as the regular sidecar.

// podAt is the recorded Pod at rv 582 (main running, envoy and the native
// log-shipper ready), changed by each f.
func podAt(t *testing.T, fs ...func(pod map[string]any)) string {
	return edit(t, recorded(t, "watch-lifecycle.jsonl")[4], func(pod map[string]any) {
		for _, f := range fs {
			f(pod)
		}
	})
}

func restartPolicy(policy string) func(map[string]any) {
	return func(pod map[string]any) { pod["spec"].(map[string]any)["restartPolicy"] = policy }
}

func gracePeriod(seconds int) func(map[string]any) {
	return func(pod map[string]any) { pod["spec"].(map[string]any)["terminationGracePeriodSeconds"] = seconds }
}

// deleting marks the Pod as being deleted with grace seconds, due that long
// after now, as the API server does on a graceful DELETE.
func deleting(grace int) func(map[string]any) {
	return func(pod map[string]any) {
		meta := pod["metadata"].(map[string]any)
		meta["deletionTimestamp"] = time.Now().Add(time.Duration(grace) * time.Second).UTC().Format(time.RFC3339)
		meta["deletionGracePeriodSeconds"] = grace
	}
}

// envoy sets the envoy sidecar's status fields.
func envoy(fields map[string]any) func(map[string]any) {
	return func(pod map[string]any) {
		for _, s := range pod["status"].(map[string]any)["containerStatuses"].([]any) {
			if s := s.(map[string]any); s["name"] == "envoy" {
				for k, v := range fields {
					s[k] = v
				}
			}
		}
	}
}

var envoyTerminated = envoy(map[string]any{"ready": false, "state": map[string]any{"terminated": map[string]any{
	"exitCode": 0, "reason": "Completed", "startedAt": "2026-11-22T00:00:01Z", "finishedAt": "2026-11-22T00:00:10Z"}}})

// gatedCommand records that it ran (marker), waits until gate exists, then
// exits with code. On TERM it exits with code at once.
func gatedCommand(t *testing.T, code string) (marker, gate string, argv []string) {
	dir := t.TempDir()
	marker, gate = filepath.Join(dir, "ran"), filepath.Join(dir, "go")
	return marker, gate, []string{"/bin/sh", "-c", "trap 'exit " + code + "' TERM; echo ran > " + marker +
		"; while [ ! -e " + gate + " ]; do sleep 0.02; done; exit " + code}
}

func waitFile(t *testing.T, p *proaRun, path string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !ran(path) {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear:\n%s", path, p.stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func open(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// setOnQuit sets what an answered quit request does, once the server runs.
func (q *quitServer) setOnQuit(f func()) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.onQuit = f
}

// logCount is how many times proa logged msg.
func (p *proaRun) logCount(msg string) int {
	return strings.Count(p.stderr.String(), `"msg":"`+msg+`"`)
}

// podRun starts proa with args against a watch that shows the recorded
// Pod's start, then ready (changed by fs); live sends more events.
func podRun(t *testing.T, args []string, argv []string, fs ...func(map[string]any)) (*fakeAPI, *proaRun, chan string) {
	t.Helper()
	f := newFakeAPI(t)
	live := make(chan string, 10)
	f.answer(stream(append(recorded(t, "watch-lifecycle.jsonl")[:4], podAt(t, fs...)), live))
	return f, startProa(t, f, nil, append(append(args, "--"), argv...)...), live
}

// Step 0: when the kubelet will restart proa's own container, and the Pod
// is not being deleted, the sidecars are left running and proa exits at once.
func TestShutdownLeavesSidecarsRunningWhenRestarted(t *testing.T) {
	tests := []struct {
		name   string
		policy string
		code   string
		more   func(map[string]any)
		leave  bool
	}{
		{"OnFailure, command failed: the kubelet retries it in place", "OnFailure", "1", nil, true},
		{"OnFailure, command succeeded", "OnFailure", "0", nil, false},
		{"Always, command succeeded", "Always", "0", nil, true},
		{"Always, command failed", "Always", "3", nil, true},
		{"Never, command failed", "Never", "1", nil, false},
		{"Always, but the Pod is being deleted", "Always", "0", deleting(30), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := newQuitServer(t)
			fs := []func(map[string]any){restartPolicy(tt.policy)}
			if tt.more != nil {
				fs = append(fs, tt.more)
			}
			marker, argv := markerCommand(t, tt.code)
			_, p, live := podRun(t, []string{"-p", q.URL, "--shutdown-timeout", "2s"}, argv, fs...)
			q.setOnQuit(func() { live <- podAt(t, append(fs, envoyTerminated)...) })
			start := time.Now()
			if code := p.wait(t); code != atoi(tt.code) {
				t.Errorf("exit code %d, want the command's %s", code, tt.code)
			}
			if !ran(marker) {
				t.Fatal("the command did not run")
			}
			if got := len(q.requests()) == 0; got != tt.leave {
				t.Errorf("sidecars left running: %v, want %v\n%s", got, tt.leave, p.stderr)
			}
			if tt.leave {
				if p.logCount("leaving the sidecars running: the kubelet will restart this container") != 1 {
					t.Errorf("proa did not say why it left the sidecars running:\n%s", p.stderr)
				}
				if d := time.Since(start); d > 10*time.Second {
					t.Errorf("proa took %s to exit", d)
				}
			}
		})
	}
}

// Step 0 after a SIGTERM: the kubelet also sends one to restart a container
// (a failed liveness probe), so a TERM alone does not stop the sidecars; the
// watch gets up to a second to show the deletion.
func TestShutdownSIGTERMWithoutDeletionLeavesSidecarsRunning(t *testing.T) {
	for _, deleted := range []bool{false, true} {
		name := map[bool]string{false: "liveness restart", true: "deletion shows after the TERM"}[deleted]
		t.Run(name, func(t *testing.T) {
			q := newQuitServer(t)
			marker, _, argv := gatedCommand(t, "0")
			_, p, live := podRun(t, []string{"-p", q.URL, "--shutdown-timeout", "2s"}, argv, restartPolicy("Always"))
			waitFile(t, p, marker)
			time.Sleep(100 * time.Millisecond) // the shell's trap is set before the marker
			termAt := time.Now()
			p.cmd.Process.Signal(syscall.SIGTERM)
			if deleted {
				time.AfterFunc(300*time.Millisecond, func() { live <- podAt(t, restartPolicy("Always"), deleting(30)) })
			}
			if code := p.wait(t); code != 0 {
				t.Errorf("exit code %d, want the command's 0", code)
			}
			if got := len(q.requests()) > 0; got != deleted {
				t.Errorf("sidecars stopped: %v, want %v\n%s", got, deleted, p.stderr)
			}
			if d := time.Since(termAt); !deleted && (d < 900*time.Millisecond || d > 5*time.Second) {
				t.Errorf("proa exited %s after the TERM; want about a second, for the watch to show a deletion", d)
			}
		})
	}
}

// Step 1: the requests are sent even when no regular sidecar is running
// (the URL may be a native sidecar's); an answer is logged at INFO with its
// status.
func TestShutdownRequestsSentWhenNoSidecarRuns(t *testing.T) {
	q := newQuitServer(t, http.StatusAccepted)
	marker, gate, argv := gatedCommand(t, "4")
	f, p, live := podRun(t, []string{"-p", q.URL + "/quit", "--shutdown-timeout", "20s"}, argv)
	waitFile(t, p, marker)
	live <- podAt(t, envoyTerminated)
	f.waitRequests(1)
	time.Sleep(200 * time.Millisecond) // let proa see it
	open(t, gate)
	start := time.Now()
	if code := p.wait(t); code != 4 {
		t.Errorf("exit code %d, want 4", code)
	}
	if n := len(q.requests()); n != 1 {
		t.Errorf("%d shutdown requests, want 1", n)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("proa took %s to exit", d)
	}
	if !strings.Contains(p.stderr.String(), `"level":"INFO","msg":"shutdown request answered","method":"POST","url":"`+q.URL+`/quit","status":"202 Accepted"`) {
		t.Errorf("no INFO line for the answered request with its status:\n%s", p.stderr)
	}
}

// Step 3: with no -g, -p, -k or -K nothing can stop a sidecar: proa does not
// wait (it warned at start, once), and exits at once.
func TestShutdownWithNothingToStopSidecars(t *testing.T) {
	marker, argv := markerCommand(t, "6")
	_, p, _ := podRun(t, nil, argv)
	start := time.Now()
	if code := p.wait(t); code != 6 {
		t.Errorf("exit code %d, want 6", code)
	}
	if !ran(marker) {
		t.Fatal("the command did not run")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("proa took %s to exit, waiting for sidecars nothing stops", d)
	}
	for _, msg := range []string{
		"taking the first container as proa's own: set PROA_CONTAINER_NAME if it is not",
		"no -g, -p, -k or -K: nothing will stop the sidecars, so the Pod completes only if they exit by themselves",
	} {
		if n := p.logCount(msg); n != 1 {
			t.Errorf("proa logged %q %d times, want once:\n%s", msg, n, p.stderr)
		}
	}
}

// The start-up warnings stay quiet when the setup is fine.
func TestNoStartupWarningsForAGoodSetup(t *testing.T) {
	q := newQuitServer(t)
	_, argv := markerCommand(t, "0")
	f := newFakeAPI(t)
	live := make(chan string, 1)
	f.answer(stream(append(recorded(t, "watch-lifecycle.jsonl")[:4], podAt(t)), live))
	q.setOnQuit(func() { live <- podAt(t, envoyTerminated) })
	p := startProa(t, f, map[string]string{"PROA_CONTAINER_NAME": "main"}, append([]string{"-p", q.URL, "--"}, argv...)...)
	p.wait(t)
	if strings.Contains(p.stderr.String(), `"level":"WARN"`) {
		t.Errorf("warnings for a good setup:\n%s", p.stderr)
	}
}

// While the Pod is being stopped, the kubelet writes no container status
// until every container, proa's too, has stopped: proa sends the requests,
// waits for their answers, and exits, without waiting for statuses.
func TestShutdownWhilePodStops(t *testing.T) {
	t.Run("TERM before the command exited", func(t *testing.T) {
		q := newQuitServer(t)
		marker, _, argv := gatedCommand(t, "7")
		_, p, _ := podRun(t, []string{"-p", q.URL}, argv, gracePeriod(30))
		waitFile(t, p, marker)
		time.Sleep(100 * time.Millisecond)
		termAt := time.Now()
		p.cmd.Process.Signal(syscall.SIGTERM)
		if code := p.wait(t); code != 7 {
			t.Errorf("exit code %d, want 7", code)
		}
		if len(q.requests()) != 1 {
			t.Errorf("%d shutdown requests, want 1", len(q.requests()))
		}
		if d := time.Since(termAt); d > 5*time.Second {
			t.Errorf("proa exited %s after the TERM, waiting for statuses the kubelet does not write", d)
		}
	})
	for name, stop := range map[string]func(p *proaRun, live chan<- string){
		"TERM during the wait":           func(p *proaRun, _ chan<- string) { p.cmd.Process.Signal(syscall.SIGTERM) },
		"deletion shown during the wait": func(_ *proaRun, live chan<- string) { live <- podAt(t, gracePeriod(30), deleting(30)) },
	} {
		t.Run(name, func(t *testing.T) {
			q := newQuitServer(t)
			_, argv := markerCommand(t, "0")
			_, p, live := podRun(t, []string{"-p", q.URL}, argv, gracePeriod(30))
			p.waitLog(t, "shutdown request answered")
			time.Sleep(200 * time.Millisecond)
			stopAt := time.Now()
			stop(p, live)
			p.wait(t)
			if d := time.Since(stopAt); d > 5*time.Second {
				t.Errorf("proa exited %s after the Pod began to stop", d)
			}
		})
	}
}

// The deadline moves when the Pod's deletion shows, even in the middle of
// shutdown: a second before the deletion is due (kubectl delete
// --grace-period=3), so that the kubelet records the command's code, not 137.
func TestShutdownDeadlineFollowsTheDeletion(t *testing.T) {
	hanging := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	defer hanging.Close()
	_, argv := markerCommand(t, "5")
	_, p, live := podRun(t, []string{"-g", hanging.URL}, argv, gracePeriod(30))
	p.waitLog(t, "sending shutdown requests")
	time.Sleep(500 * time.Millisecond)
	deletedAt := time.Now()
	live <- podAt(t, gracePeriod(30), deleting(3))
	if code := p.wait(t); code != 5 {
		t.Errorf("exit code %d, want 5", code)
	}
	// Due 3 s after the deletion (whole seconds): proa ends a second before.
	if d := time.Since(deletedAt); d < 900*time.Millisecond || d > 2900*time.Millisecond {
		t.Errorf("proa exited %s after a deletion with a 3 s grace period; want 1-2 s, before the SIGKILL at 3 s", d)
	}
}

// Step 3: a sidecar the kubelet restarted at once (restartCount grew, the
// state is running again) has exited.
func TestShutdownCountsARestartAsAnExit(t *testing.T) {
	q := newQuitServer(t)
	_, argv := markerCommand(t, "0")
	_, p, live := podRun(t, []string{"-p", q.URL, "--shutdown-timeout", "20s"}, argv)
	q.setOnQuit(func() {
		live <- podAt(t, envoy(map[string]any{"restartCount": 1, "lastState": map[string]any{"terminated": map[string]any{
			"exitCode": 0, "reason": "Completed", "startedAt": "2026-11-22T00:00:01Z", "finishedAt": time.Now().UTC().Format(time.RFC3339)}}}))
	})
	start := time.Now()
	p.wait(t)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("proa took %s: it waited for a sidecar that had exited and was restarted", d)
	}
	if p.logCount("sidecars exited") != 1 {
		t.Errorf("no sidecars exited line:\n%s", p.stderr)
	}
}

// Step 4: with a service mesh, proa's API connection runs through the proxy
// it told to quit. Once the stop was accepted, a watch that breaks and
// cannot be re-established at the first retry means the sidecars exited.
func TestShutdownAPIConnectionLostAfterTheStop(t *testing.T) {
	for _, accepted := range []bool{true, false} {
		name := map[bool]string{true: "after the stop was accepted", false: "before"}[accepted]
		t.Run(name, func(t *testing.T) {
			var url string
			if accepted {
				url = newQuitServer(t).URL
			} else {
				hanging := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
				defer hanging.Close()
				url = hanging.URL
			}
			_, argv := markerCommand(t, "0")
			f, p, _ := podRun(t, []string{"-p", url, "--shutdown-timeout", "4s"}, argv)
			p.waitLog(t, "sending shutdown requests")
			if accepted {
				p.waitLog(t, "shutdown request answered")
			}
			lost := time.Now()
			f.srv.Listener.Close() // the proxy is gone: reconnecting is refused
			f.srv.CloseClientConnections()
			p.wait(t)
			d := time.Since(lost)
			logged := p.logCount("API connection lost after the stop was accepted: the sidecars most likely exited") == 1
			if accepted && (d > 3*time.Second || !logged) {
				t.Errorf("proa exited %s after its API connection was lost (logged: %v)\n%s", d, logged, p.stderr)
			}
			if !accepted && (d < 3*time.Second || logged) {
				t.Errorf("proa exited %s after its API connection was lost, before any stop was accepted (logged: %v)\n%s", d, logged, p.stderr)
			}
		})
	}
}

// The watcher's request counts behind step 4: a stream that breaks is not a
// failure to connect; an answer that opens no stream (a 503 from a proxy
// that is going away, a refused connection) is.
func TestWatchCountsRequestsThatCouldNotOpen(t *testing.T) {
	fastTiming(t)
	f := newFakeAPI(t)
	lines := recorded(t, "watch-lifecycle.jsonl")
	f.answer(
		func(w http.ResponseWriter, r *http.Request) { // opened, then cut
			stream(lines[:1], nil)(w, r)
			w.Write([]byte(lines[2][:20]))
		},
		raw(http.StatusServiceUnavailable, `{"kind":"Status","code":503,"message":"upstream connect error"}`),
		stream(lines[:1], make(chan string)),
	)
	w, _ := watchPod(t, f, "")
	st := waitFor(t, w, "the third watch open", func(s podState) bool { return s.opened == 3 })
	// The cut stream (request 1) did not count; the 503 (request 2) did.
	if st.attempts != 3 || st.failed != 2 {
		t.Errorf("attempts %d, opened %d, failed %d; want 3, 3, 2", st.attempts, st.opened, st.failed)
	}
	tests := []struct {
		s     podState
		after int // attempts when the stop was accepted
		want  bool
	}{
		{podState{attempts: 3, opened: 3, failed: 2}, 1, false}, // connected again
		{podState{attempts: 2, opened: 1, failed: 2}, 1, true},  // request 2 failed after the stop
		{podState{attempts: 3, opened: 1, failed: 2}, 1, true},  // ... and request 3 is still trying
		{podState{attempts: 2, opened: 1, failed: 2}, 2, false}, // request 2 began before the stop
		{podState{attempts: 1, opened: 1, failed: 0}, 1, false}, // open
		{podState{attempts: 5, opened: 2, failed: 4}, 2, true},  // failing since the stop
	}
	for _, tt := range tests {
		if got := tt.s.connectionLost(tt.after); got != tt.want {
			t.Errorf("%+v.connectionLost(%d) = %v, want %v", tt.s, tt.after, got, tt.want)
		}
	}
}

// Step 4's "at the first retry" must come soon after the break, whatever
// the backoff had grown to: once a sidecar accepted the stop, the next
// retry after the watch breaks is made at once. (In a real Pod the proxy
// may not have been listening when proa started, so earlier failures had
// grown the delay to seconds: proa then exited 2.6 s after the proxy.)
func TestWatchRetriesSoonAfterTheStopWasAccepted(t *testing.T) {
	saved := backoffFirst
	backoffFirst = 4 * time.Second // a retry after the break waits 2 to 6 s, unless hurried
	t.Cleanup(func() { backoffFirst = saved })
	f := newFakeAPI(t)
	lines := recorded(t, "watch-lifecycle.jsonl")
	cut := make(chan struct{})
	f.answer(func(rw http.ResponseWriter, r *http.Request) {
		stream(lines[:1], nil)(rw, r)
		<-cut
		rw.Write([]byte(lines[2][:20])) // the proxy carrying it exits mid-event
	}, raw(http.StatusServiceUnavailable, `{"kind":"Status","code":503}`))
	w, _ := watchPod(t, f, "")
	waitFor(t, w, "the pod", func(s podState) bool { return s.pod != nil })
	w.retrySoon()
	broke := time.Now()
	close(cut)
	reqs := f.waitRequests(2)
	if d := reqs[1].At.Sub(broke); d > time.Second {
		t.Errorf("the first retry after the break came %s later, want at once", d.Round(time.Millisecond))
	}
}

// The break may come a moment before the answer that accepts the stop (a
// mesh proxy that exits as it answers): the watcher is then already
// waiting out a grown backoff, and the accepted stop must cut that wait
// short too, or step 4 is decided seconds late.
func TestWatchRetriesSoonWhenTheStopIsAcceptedAfterTheBreak(t *testing.T) {
	saved := backoffFirst
	backoffFirst = 4 * time.Second // the retry after the break waits 2 to 6 s, unless hurried
	t.Cleanup(func() { backoffFirst = saved })
	f := newFakeAPI(t)
	lines := recorded(t, "watch-lifecycle.jsonl")
	f.answer(func(rw http.ResponseWriter, r *http.Request) {
		stream(lines[:1], nil)(rw, r)
		rw.Write([]byte(lines[2][:20])) // the proxy carrying it exits mid-event
	}, raw(http.StatusServiceUnavailable, `{"kind":"Status","code":503}`))
	w, _ := watchPod(t, f, "")
	// The break is seen, and the watcher waits for its next try.
	waitFor(t, w, "the break", func(s podState) bool { return s.lastErr != nil })
	accepted := time.Now()
	w.retrySoon()
	reqs := f.waitRequests(2)
	if d := reqs[1].At.Sub(accepted); d > time.Second {
		t.Errorf("the first retry came %s after the stop was accepted, want at once", d.Round(time.Millisecond))
	}
}

// The deadline after a TERM that came while the command ran: the kubelet's
// SIGKILL comes a grace period after that TERM, not after the command's
// exit, so a shutdown request that hangs holds proa until a second before
// it (grace 3 s: 2 s after the TERM), not for a grace period after the
// command (4.5 s after the TERM, when proa would be killed and the kubelet
// would record 137).
func TestShutdownDeadlineCountsFromTheTERM(t *testing.T) {
	hanging := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	defer hanging.Close()
	dir := t.TempDir()
	marker := filepath.Join(dir, "ran")
	// The command takes 1.5 s to exit after the TERM.
	argv := []string{"/bin/sh", "-c", "trap 'sleep 1.5; exit 7' TERM; echo ran > " + marker + "; while :; do sleep 0.02; done"}
	_, p, _ := podRun(t, []string{"-g", hanging.URL}, argv, gracePeriod(3))
	waitFile(t, p, marker)
	time.Sleep(100 * time.Millisecond) // the shell's trap is set before the marker
	termAt := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t); code != 7 {
		t.Errorf("exit code %d, want 7", code)
	}
	if d := time.Since(termAt); d < 1500*time.Millisecond || d > 2900*time.Millisecond {
		t.Errorf("proa exited %s after the TERM; want about 2 s, a second before the SIGKILL due 3 s after it\n%s", d, p.stderr)
	}
}

// An answer from the API server itself (401, 403, 410, 429) shows that the
// connection is alive: it is not the lost connection of step 4, which only
// a failed connection or a 5xx (a proxy going away) can show.
func TestWatchAPIAnswersAreNotALostConnection(t *testing.T) {
	fastTiming(t)
	f := newFakeAPI(t)
	lines := recorded(t, "watch-lifecycle.jsonl")
	f.answer(
		raw(http.StatusGone, `{"kind":"Status","code":410,"reason":"Expired"}`),
		raw(http.StatusTooManyRequests, `{"kind":"Status","code":429}`),
		raw(http.StatusUnauthorized, `{"kind":"Status","code":401}`),
		raw(http.StatusForbidden, `{"kind":"Status","code":403}`),
		stream(lines[:1], make(chan string)),
	)
	w, _ := watchPod(t, f, "")
	st := waitFor(t, w, "the fifth watch open", func(s podState) bool { return s.opened == 5 })
	if st.failed != 0 {
		t.Errorf("failed = %d after answers from the API server itself, want 0", st.failed)
	}
}
