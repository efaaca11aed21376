package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"proa/e2e/kubelet"
)

// readyEndpoint is an HTTP endpoint for --wait-http that answers 503 until
// the test opens it, then 200. It records every request.
type readyEndpoint struct {
	URL  string
	mu   sync.Mutex
	open time.Time // zero while closed
	reqs []endpointRequest
}

type endpointRequest struct {
	at   time.Time
	code int
	ua   string
}

func newReadyEndpoint(t *testing.T) *readyEndpoint {
	e := &readyEndpoint{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		code := http.StatusServiceUnavailable
		if !e.open.IsZero() {
			code = http.StatusOK
		}
		e.reqs = append(e.reqs, endpointRequest{at: time.Now(), code: code, ua: r.UserAgent()})
		e.mu.Unlock()
		w.WriteHeader(code)
	}))
	t.Cleanup(srv.Close)
	e.URL = srv.URL + "/healthz/ready"
	return e
}

// Open makes the endpoint answer 200 from now on and returns when.
func (e *readyEndpoint) Open() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.open = time.Now()
	return e.open
}

func (e *readyEndpoint) requests() []endpointRequest {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]endpointRequest(nil), e.reqs...)
}

// Scenario 17: --wait-http combined with the Pod watch. The command starts
// only once both hold, promptly after the later one: the sidecar's ready
// status (written at about 1 s) and an extra HTTP endpoint (200 from about
// 3 s), then the other way round. proa polls the endpoint with backoff
// (not every 50 ms for 3 s), names it in its "waiting for sidecars" log, and
// stops polling once it answered 200.
func TestWaitHTTPWithPodWatch(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		podFirst bool // the sidecar is ready first, the endpoint later
	}{
		{"endpoint-later", true},
		{"sidecar-later", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ep := newReadyEndpoint(t)
			sc := kubelet.Sidecar{NeverReady: true}
			if tc.podFirst {
				sc = kubelet.Sidecar{ReadyAfter: time.Second}
			}
			p := startPod(t, proaPod(sc,
				[]string{"--log-level", "debug", "--wait-http", ep.URL, "-p", kubelet.URLOf("envoy", "/quit")},
				kubelet.App("exit", "0")))
			ctx := testCtx(t, 60*time.Second)
			var ready kubelet.StatusWrite
			var opened time.Time
			var err error
			if tc.podFirst {
				if ready, err = p.WaitWrite(ctx, "envoy ready", kubelet.Ready("envoy")); err != nil {
					t.Fatal(err)
				}
				time.Sleep(time.Until(ready.Done.Add(2 * time.Second)))
				if appRan(p) {
					t.Errorf("the command started before the --wait-http endpoint answered 200")
				}
				opened = ep.Open()
				p.Note("--wait-http endpoint opened (200 from now on)")
			} else {
				time.Sleep(time.Until(p.Created.Add(time.Second)))
				opened = ep.Open()
				p.Note("--wait-http endpoint opened (200 from now on)")
				time.Sleep(2 * time.Second)
				if appRan(p) {
					t.Errorf("the command started before the sidecar was ready")
				}
				if err := p.SetReady(ctx, "envoy", true); err != nil {
					t.Fatal(err)
				}
				if ready, err = p.WaitWrite(ctx, "envoy ready", kubelet.Ready("envoy")); err != nil {
					t.Fatal(err)
				}
			}
			started := appEvent(t, ctx, p, "started")
			ex := waitExit(t, ctx, p, 0)

			reqs := ep.requests()
			var first200 time.Time
			var before, after int // requests before the endpoint opened, and after its first 200
			for _, r := range reqs {
				switch {
				case r.code != 200:
					before++
				case first200.IsZero():
					first200 = r.at
					if !strings.HasPrefix(r.ua, "proa/") {
						t.Errorf("--wait-http request User-Agent %q, want proa/VERSION", r.ua)
					}
				default:
					after++
				}
			}
			if first200.IsZero() {
				t.Fatalf("proa never got a 200 from the --wait-http endpoint (%d requests)", len(reqs))
			}
			if !started.Time.After(first200) {
				t.Errorf("the command started before the endpoint first answered 200")
			}
			if !started.Time.After(ready.Sent) {
				t.Errorf("the command started before the sidecar's ready status was written")
			}
			later := opened
			if ready.Done.After(later) {
				later = ready.Done
			}
			latency := started.Time.Sub(later)
			limit := 2 * time.Second // the watch; the endpoint's poll interval is at most 1 s
			if tc.podFirst {
				limit = 1500 * time.Millisecond
			}
			if latency > limit {
				t.Errorf("the command started %s after the later condition held; want < %s", latency, limit)
			}
			if after > 0 {
				t.Errorf("proa polled the endpoint %d more times after it answered 200", after)
			}
			if window := opened.Sub(p.Created); before < 2 || before > 15 {
				t.Errorf("proa polled the closed endpoint %d times in %s; want backoff from 50ms to 1s (about 7 in 3s)",
					before, ms(window))
			}
			named := false
			for _, l := range p.ProaLogs("") {
				if l.Msg == "waiting for sidecars" && strings.Contains(fmt.Sprint(l.Attrs["not_ready"]), "GET "+ep.URL) {
					named = true
				}
			}
			if !named {
				t.Errorf(`no "waiting for sidecars" line names the --wait-http endpoint in not_ready`)
			}
			logLine(t, p, "sidecars ready")
			recordTiming(t, "sidecar ready at %s, endpoint 200 from %s: later condition -> command started %s (first 200 -> started %s); %d polls before 200; proa start -> exit %s",
				ms(ready.Done.Sub(p.Created)), ms(opened.Sub(p.Created)), ms(latency), ms(started.Time.Sub(first200)),
				before, ms(ex.Duration()))
		})
	}
}
