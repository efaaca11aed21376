package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// quitServer is a sidecar's shutdown endpoint: it answers with the queued
// status codes in turn (200 once they run out) and records every request.
type quitServer struct {
	*httptest.Server
	mu      sync.Mutex
	codes   []int
	reqs    []*http.Request
	bodies  []string
	onQuit  func()
	arrived chan struct{}
}

func newQuitServer(t *testing.T, codes ...int) *quitServer {
	q := &quitServer{codes: codes, arrived: make(chan struct{}, 100)}
	q.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		q.mu.Lock()
		q.reqs = append(q.reqs, r)
		q.bodies = append(q.bodies, string(body))
		code := http.StatusOK
		if len(q.codes) > 0 {
			code, q.codes = q.codes[0], q.codes[1:]
		}
		onQuit := q.onQuit
		q.mu.Unlock()
		w.WriteHeader(code)
		if code < 400 && onQuit != nil {
			onQuit()
		}
		q.arrived <- struct{}{}
	}))
	t.Cleanup(q.Close)
	return q
}

func (q *quitServer) requests() []*http.Request {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]*http.Request(nil), q.reqs...)
}

func TestShutdownRequestRetries5xx(t *testing.T) {
	q := newQuitServer(t, 503, 500)
	err := shutdownRequest(context.Background(), http.DefaultClient, "POST", q.URL+"/quitquitquit", time.Now().Add(10*time.Second), 0)
	if err != nil {
		t.Fatalf("shutdownRequest: %v", err)
	}
	reqs := q.requests()
	if len(reqs) != 3 {
		t.Fatalf("made %d attempts, want 3", len(reqs))
	}
	for i, r := range reqs {
		if r.Method != "POST" || r.URL.Path != "/quitquitquit" || q.bodies[i] != "" {
			t.Errorf("attempt %d: %s %s body %q, want POST /quitquitquit with no body", i, r.Method, r.URL.Path, q.bodies[i])
		}
		if ua := r.UserAgent(); ua != "proa/"+proaVersion() {
			t.Errorf("User-Agent %q, want proa/%s", ua, proaVersion())
		}
	}
}

func TestShutdownRequest4xxIsFinal(t *testing.T) {
	q := newQuitServer(t, 405)
	err := shutdownRequest(context.Background(), http.DefaultClient, "GET", q.URL, time.Now().Add(10*time.Second), 0)
	if err == nil || err.Error() != "405 Method Not Allowed" {
		t.Errorf("err = %v, want 405 Method Not Allowed", err)
	}
	if n := len(q.requests()); n != 1 {
		t.Errorf("made %d attempts, want 1", n)
	}
}

// refusingURL is a loopback address nothing listens on.
func refusingURL(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr + "/quit"
}

func TestShutdownRequestRefused(t *testing.T) {
	url := refusingURL(t)
	t.Run("until the deadline", func(t *testing.T) {
		start := time.Now()
		err := shutdownRequest(context.Background(), http.DefaultClient, "POST", url, start.Add(700*time.Millisecond), 0)
		if err == nil || !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("err = %v, want connection refused", err)
		}
		if d := time.Since(start); d < 300*time.Millisecond {
			t.Errorf("gave up after %s, well before the deadline", d)
		}
	})
	t.Run("at most refusedFor without Kubernetes", func(t *testing.T) {
		start := time.Now()
		err := shutdownRequest(context.Background(), http.DefaultClient, "POST", url, start.Add(time.Hour), 500*time.Millisecond)
		if err == nil {
			t.Fatal("no error")
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("retried a refused connection for %s", d)
		}
	})
	t.Run("one attempt even past the deadline", func(t *testing.T) {
		q := newQuitServer(t)
		if err := shutdownRequest(context.Background(), http.DefaultClient, "GET", q.URL, time.Now().Add(-time.Second), 0); err != nil {
			t.Errorf("err = %v", err)
		}
		if n := len(q.requests()); n != 1 {
			t.Errorf("made %d attempts, want 1", n)
		}
	})
}

// TestShutdownStopsRetryingOnceSidecarsExited: a sidecar that has exited
// refuses connections; its terminated status must end the shutdown at once.
func TestShutdownStopsRetryingOnceSidecarsExited(t *testing.T) {
	f := newFakeAPI(t)
	lines := recorded(t, "watch-lifecycle.jsonl")
	live := make(chan string, 1)
	f.answer(stream(lines[:5], live))
	w, _ := watchPod(t, f, "")
	waitFor(t, w, "rv 582", hasRV("582"))

	hanging := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	defer hanging.Close()
	c := &config{postURLs: []string{refusingURL(t), hanging.URL}, shutdownTimeout: time.Minute, shutdownTimeoutOK: true}
	logs := new(syncBuffer)
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	done := make(chan struct{})
	start := time.Now()
	go func() { shutdown(context.Background(), c, w, "main", nil, log); close(done) }()
	time.Sleep(300 * time.Millisecond) // let the request fail and retry a few times
	select {
	case <-done:
		t.Fatal("shutdown ended while the sidecar was still running")
	default:
	}
	live <- lines[5] // envoy terminated
	exited := time.Now()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("shutdown still running 20s after the sidecars exited")
	}
	// Both the retrying request and the one still waiting for an answer
	// are cancelled, well before the 5 s per-attempt timeout.
	if d := time.Since(exited); d >= shutdownAttemptTimeout-time.Second {
		t.Errorf("shutdown took %s after the sidecars exited (started %s ago)", d, time.Since(start))
	}
	out := logs.String()
	if !strings.Contains(out, `"msg":"sidecars exited"`) || strings.Contains(out, `"msg":"shutdown request failed"`) {
		t.Errorf("want sidecars exited and no WARN for the cancelled request:\n%s", out)
	}
	if len(f.got()) != 1 {
		t.Errorf("shutdown made new API requests: %+v", f.got())
	}
}

func TestWaitSidecarsExitedEndsWithPod(t *testing.T) {
	f := newFakeAPI(t)
	lines := recorded(t, "watch-lifecycle.jsonl")
	deleted := strings.Replace(lines[4], `"type":"MODIFIED"`, `"type":"DELETED"`, 1)
	f.answer(stream([]string{lines[0], deleted}, make(chan string)))
	w, _ := watchPod(t, f, "")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := waitSidecarsExited(ctx, w, "main", nil)
	if err == nil || err.Error() != "pod rec3/job-1 was deleted" || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want the deletion", err)
	}
}

// TestShutdownDeadline: a sidecar that never exits and a URL that never
// answers hold proa until the deadline, not longer.
func TestShutdownStopsAtItsDeadline(t *testing.T) {
	f := newFakeAPI(t)
	f.answer(stream(recorded(t, "watch-lifecycle.jsonl")[:5], make(chan string)))
	w, _ := watchPod(t, f, "")
	waitFor(t, w, "rv 582", hasRV("582"))
	hanging := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	defer hanging.Close()
	c := &config{getURLs: []string{hanging.URL}, shutdownTimeout: 700 * time.Millisecond, shutdownTimeoutOK: true}
	logs := new(syncBuffer)
	start := time.Now()
	shutdown(context.Background(), c, w, "main", nil, slog.New(slog.NewJSONHandler(logs, nil)))
	if d := time.Since(start); d < 700*time.Millisecond || d > 3*time.Second {
		t.Errorf("shutdown took %s, want about its 700ms deadline", d)
	}
	for _, want := range []string{`"msg":"not all sidecars exited","err":"still running at the shutdown deadline: [envoy]"`, `"msg":"shutdown request failed"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %s:\n%s", want, logs)
		}
	}
}

// A sidecar that answers 200 and then trickles its body (or never ends it)
// has accepted the request: its status decides, the body is not awaited.
func TestShutdownRequestDoesNotWaitForTheBody(t *testing.T) {
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		for range 100 {
			w.Write([]byte("."))
			w.(http.Flusher).Flush()
			select {
			case <-done:
				return
			case <-r.Context().Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(done) })
	start := time.Now()
	if err := shutdownRequest(context.Background(), http.DefaultClient, "POST", srv.URL, time.Now().Add(10*time.Second), 0); err != nil {
		t.Fatalf("shutdownRequest: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("took %s: waited for the body after the 200", d)
	}
}
