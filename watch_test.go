package main

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fastTiming shortens the watch's delays for the test.
func fastTiming(t *testing.T) {
	saved := []time.Duration{backoffFirst, backoffMax, watchFallbackAfter, forbiddenFor}
	backoffFirst, backoffMax, watchFallbackAfter, forbiddenFor = 10*time.Millisecond, 50*time.Millisecond, 200*time.Millisecond, 300*time.Millisecond
	t.Cleanup(func() {
		backoffFirst, backoffMax, watchFallbackAfter, forbiddenFor = saved[0], saved[1], saved[2], saved[3]
	})
}

// syncBuffer collects logs written from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func watchPod(t *testing.T, f *fakeAPI, uid string) (*podWatcher, *syncBuffer) {
	t.Helper()
	client, err := newKubeClient(env(f.env()), f.saDir)
	if err != nil {
		t.Fatal(err)
	}
	logs := new(syncBuffer)
	w := newPodWatcher(client, "rec3", "job-1", uid, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return w, logs
}

// waitFor waits until the watcher's state satisfies ok.
func waitFor(t *testing.T, w *podWatcher, what string, ok func(podState) bool) podState {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		st, changed := w.current()
		if ok(st) {
			return st
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("timed out waiting for %s; state: pod=%v gone=%v lastErr=%v", what, st.pod != nil, st.gone, st.lastErr)
		}
	}
}

func hasRV(rv string) func(podState) bool {
	return func(s podState) bool { return s.pod != nil && s.pod.Metadata.ResourceVersion == rv }
}

// checkWatch checks that r is the one watch request SPEC §4 describes.
func checkWatch(t *testing.T, r apiRequest, wantRV string) {
	t.Helper()
	if r.Method != "GET" || r.Path != "/api/v1/namespaces/rec3/pods" {
		t.Errorf("request %s %s, want GET /api/v1/namespaces/rec3/pods", r.Method, r.Path)
	}
	q := r.Query
	timeout, _ := strconv.Atoi(q.Get("timeoutSeconds"))
	if timeout < 300 || timeout > 600 {
		t.Errorf("timeoutSeconds=%q, want 300..600", q.Get("timeoutSeconds"))
	}
	q.Del("timeoutSeconds")
	want := map[string][]string{"watch": {"1"}, "fieldSelector": {"metadata.name=job-1"}, "allowWatchBookmarks": {"true"}}
	if wantRV != "" {
		want["resourceVersion"] = []string{wantRV}
	}
	if diff := cmp.Diff(want, map[string][]string(q)); diff != "" {
		t.Errorf("watch query (-want +got):\n%s", diff)
	}
	if r.Proto != 2 {
		t.Errorf("request over HTTP/%d, want HTTP/2", r.Proto)
	}
	if !strings.HasPrefix(r.UserAgent, "proa/") {
		t.Errorf("User-Agent %q, want proa/VERSION", r.UserAgent)
	}
}

func TestWatchLifecycleIsOneRequest(t *testing.T) {
	f := newFakeAPI(t)
	lines := recorded(t, "watch-lifecycle.jsonl")
	live := make(chan string)
	f.answer(stream(lines[:4], live))
	w, _ := watchPod(t, f, "")

	st := waitFor(t, w, "rv 581", hasRV("581"))
	if nr, _ := readiness(st.pod, sidecarsOf(st.pod, "main")); len(nr) != 1 || nr[0] != "envoy: running, not ready" {
		t.Errorf("at rv 581 notReady = %q, want envoy running", nr)
	}
	live <- lines[4]
	st = waitFor(t, w, "rv 582", hasRV("582"))
	if nr, failed := readiness(st.pod, sidecarsOf(st.pod, "main")); len(nr) != 0 || failed != "" {
		t.Errorf("at rv 582 notReady = %q, failed %q; want ready", nr, failed)
	}
	live <- lines[5]
	st = waitFor(t, w, "rv 583", hasRV("583"))
	if running := stillRunning(st.pod, sidecarsOf(st.pod, "main")); len(running) != 0 {
		t.Errorf("at rv 583 still running: %q", running)
	}
	reqs := f.got()
	if len(reqs) != 1 {
		t.Fatalf("made %d requests, want exactly 1: %+v", len(reqs), reqs)
	}
	checkWatch(t, reqs[0], "")
	if reqs[0].Token != "token-1" {
		t.Errorf("token %q, want token-1", reqs[0].Token)
	}
}

func TestWatchResumesFromLastModifiedOrBookmark(t *testing.T) {
	fastTiming(t)
	f := newFakeAPI(t)
	lines := recorded(t, "watch-lifecycle.jsonl")
	hold := make(chan string)
	f.answer(
		stream(lines[:1], nil),                              // ADDED only, then a clean end: nothing to resume from
		stream(lines[:2], nil),                              // ADDED + BOOKMARK 579
		stream(lines[2:3], nil),                             // MODIFIED 580
		raw(http.StatusGone, f.file("watch-too-old.jsonl")), // HTTP 410: start over
		stream(lines[:4], nil),                              // ADDED 579 ... MODIFIED 581
		stream(recorded(t, "watch-too-old.jsonl"), nil),     // in-stream ERROR 410: start over
		stream(lines[:1], hold),
	)
	w, _ := watchPod(t, f, "")
	reqs := f.waitRequests(7)
	waitFor(t, w, "rv 579 again", hasRV("579"))
	for i, want := range []string{"", "", "579", "580", "", "581", ""} {
		checkWatch(t, reqs[i], want)
	}
}

func TestWatchTruncatedEventIsRetried(t *testing.T) {
	fastTiming(t)
	f := newFakeAPI(t)
	lines := recorded(t, "watch-lifecycle.jsonl")
	cut := lines[4][:len(lines[4])/2]
	f.answer(
		func(w http.ResponseWriter, r *http.Request) { // a stream cut in the middle of an object
			stream(lines[:3], nil)(w, r)
			w.Write([]byte(cut))
		},
		stream([]string{`{"type":"MODIFIED","object":`, `{not json}}`}, nil), // malformed
		stream([]string{`{"type":"SURPRISE","object":{}}`}, nil),             // unknown type
		stream(lines[4:5], make(chan string)),
	)
	w, logs := watchPod(t, f, "")
	waitFor(t, w, "rv 582", hasRV("582"))
	for i, want := range []string{"", "580", "580", "580"} {
		checkWatch(t, f.got()[i], want)
	}
	for _, want := range []string{"unexpected EOF", "invalid character", `watch event of unknown type \"SURPRISE\"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %q:\n%s", want, logs)
		}
	}
}

func TestWatchRereadsTokenAfter401(t *testing.T) {
	fastTiming(t)
	f := newFakeAPI(t)
	rotated := make(chan struct{})
	f.answer(func(w http.ResponseWriter, r *http.Request) {
		f.setToken("token-2") // the kubelet rotated it; the old one is refused
		close(rotated)
		raw(http.StatusUnauthorized, f.file("unauthorized.json"))(w, r)
	}, stream(recorded(t, "watch-lifecycle.jsonl")[:1], make(chan string)))
	w, _ := watchPod(t, f, "")
	waitFor(t, w, "the pod", hasRV("579"))
	reqs := f.got()
	if got := []string{reqs[0].Token, reqs[1].Token}; !cmp.Equal(got, []string{"token-1", "token-2"}) {
		t.Errorf("tokens sent %q, want [token-1 token-2]", got)
	}
}

func TestWatchForbiddenIsFatalAfterAWhile(t *testing.T) {
	fastTiming(t)
	backoffFirst = 2 * time.Second // longer than forbiddenFor: the last try must come on time anyway
	f := newFakeAPI(t)
	for range 100 {
		f.answer(raw(http.StatusForbidden, f.file("forbidden.json")))
	}
	start := time.Now()
	w, logs := watchPod(t, f, "")
	st := waitFor(t, w, "gone", func(s podState) bool { return s.gone != nil })
	if d := time.Since(start); d < forbiddenFor || d > forbiddenFor+700*time.Millisecond {
		t.Errorf("gave up after %s, want soon after %s (not a backoff later)", d, forbiddenFor)
	}
	for _, want := range []string{"403 Forbidden", `cannot watch resource \"pods\"`} {
		if !strings.Contains(st.gone.Error(), strings.ReplaceAll(want, `\"`, `"`)) {
			t.Errorf("error %q lacks %q", st.gone, want)
		}
	}
	if !strings.Contains(logs.String(), `"level":"ERROR","msg":"watching pod forbidden`) || !strings.Contains(logs.String(), `verbs: [\"get\", \"watch\"]`) {
		t.Errorf("logs lack the ERROR with the missing rule:\n%s", logs)
	}
	if n := len(f.got()); n < 2 {
		t.Errorf("made %d requests, want retries", n)
	}
}

func TestWatchHonoursRetryAfter(t *testing.T) {
	fastTiming(t)
	f := newFakeAPI(t)
	f.answer(
		raw(http.StatusTooManyRequests, `{"kind":"Status","code":429,"message":"too many requests"}`, "Retry-After", "1"),
		stream(recorded(t, "watch-lifecycle.jsonl")[:1], make(chan string)),
	)
	w, _ := watchPod(t, f, "")
	waitFor(t, w, "the pod", hasRV("579"))
	reqs := f.got()
	if gap := reqs[1].At.Sub(reqs[0].At); gap < 900*time.Millisecond {
		t.Errorf("retried after %s, want Retry-After's 1s", gap)
	}
}

func TestWatchPodNotFound(t *testing.T) {
	fastTiming(t)
	t.Run("initial-events-end bookmark without the pod", func(t *testing.T) {
		f := newFakeAPI(t)
		f.answer(stream(recorded(t, "watch-absent.jsonl"), make(chan string)))
		w, _ := watchPod(t, f, "")
		st := waitFor(t, w, "gone", func(s podState) bool { return s.gone != nil })
		if !strings.Contains(st.gone.Error(), "pod rec3/job-1 not found: set POD_NAME from the downward API") {
			t.Errorf("error %q lacks the POD_NAME hint", st.gone)
		}
		if n := len(f.got()); n != 1 {
			t.Errorf("made %d requests, want 1", n)
		}
	})
	t.Run("old server: silence, then the one GET says 404", func(t *testing.T) {
		f := newFakeAPI(t)
		f.answer(stream(nil, make(chan string)), raw(http.StatusNotFound, f.file("get-absent.json")))
		w, _ := watchPod(t, f, "")
		st := waitFor(t, w, "gone", func(s podState) bool { return s.gone != nil })
		if !strings.Contains(st.gone.Error(), "not found: set POD_NAME") {
			t.Errorf("error %q lacks the POD_NAME hint", st.gone)
		}
		reqs := f.got()
		if len(reqs) != 2 || reqs[1].Path != "/api/v1/namespaces/rec3/pods/job-1" || len(reqs[1].Query) != 0 {
			t.Errorf("requests %+v, want the watch then GET pods/job-1", reqs)
		}
	})
	t.Run("old server: silence, the GET finds the pod, events follow", func(t *testing.T) {
		f := newFakeAPI(t)
		live := make(chan string, 1)
		f.answer(stream(nil, live), func(w http.ResponseWriter, r *http.Request) {
			raw(http.StatusOK, `{"kind":"Pod","metadata":{"name":"job-1"}}`)(w, r)
			live <- recorded(t, "watch-lifecycle.jsonl")[0]
		})
		w, _ := watchPod(t, f, "")
		waitFor(t, w, "the pod", hasRV("579"))
		if st, _ := w.current(); st.gone != nil {
			t.Errorf("gone: %v", st.gone)
		}
		if n := len(f.got()); n != 2 {
			t.Errorf("made %d requests, want 2", n)
		}
	})
}

func TestWatchWrongUIDOrDeleted(t *testing.T) {
	lines := recorded(t, "watch-lifecycle.jsonl")
	t.Run("POD_UID differs", func(t *testing.T) {
		f := newFakeAPI(t)
		f.answer(stream(lines[:1], make(chan string)))
		w, _ := watchPod(t, f, "some-other-uid")
		st := waitFor(t, w, "gone", func(s podState) bool { return s.gone != nil })
		if !strings.Contains(st.gone.Error(), "but POD_UID is some-other-uid") {
			t.Errorf("error %q", st.gone)
		}
	})
	t.Run("deleted", func(t *testing.T) {
		f := newFakeAPI(t)
		deleted := strings.Replace(lines[5], `"type":"MODIFIED"`, `"type":"DELETED"`, 1)
		f.answer(stream([]string{lines[0], deleted}, make(chan string)))
		w, _ := watchPod(t, f, "a8dfa648-fa12-42ac-aac6-647291d2f4df")
		st := waitFor(t, w, "gone", func(s podState) bool { return s.gone != nil })
		if st.gone.Error() != "pod rec3/job-1 was deleted" {
			t.Errorf("error %q", st.gone)
		}
	})
}

func TestWatchFallbackGETRetriesUntilItKnows(t *testing.T) {
	fastTiming(t)
	f := newFakeAPI(t)
	silent := stream(nil, make(chan string)) // an old server: silence for a missing Pod
	slow := raw(http.StatusServiceUnavailable, `{"kind":"Status","code":503,"message":"etcd is slow"}`)
	// On a loaded machine the first GET may reach the server before the
	// watch: the first two answers serve either, by path.
	f.answer(route(silent, slow), route(silent, slow),
		raw(http.StatusForbidden, `{"kind":"Status","code":403,"message":"pods \"job-1\" is forbidden: User cannot get resource \"pods\""}`),
		raw(http.StatusNotFound, f.file("get-absent.json")))
	w, logs := watchPod(t, f, "")
	st := waitFor(t, w, "gone", func(s podState) bool { return s.gone != nil })
	if !strings.Contains(st.gone.Error(), "not found: set POD_NAME") {
		t.Errorf("error %q", st.gone)
	}
	reqs := f.got()
	if len(reqs) != 4 {
		t.Errorf("requests %+v, want the watch and three GETs", reqs)
	}
	if !strings.Contains(logs.String(), `"level":"ERROR","msg":"checking that the pod exists forbidden`) {
		t.Errorf("a 403 on the GET is not logged at ERROR with the rule:\n%s", logs)
	}
}

func TestWatchErrorsKeepOrDropTheResumePoint(t *testing.T) {
	fastTiming(t)
	f := newFakeAPI(t)
	lines := recorded(t, "watch-lifecycle.jsonl")
	f.answer(
		stream(lines[:3], nil), // ... MODIFIED 580, then a clean end
		stream([]string{`{"type":"ERROR","object":{"kind":"Status","code":500,"message":"internal error","details":{"retryAfterSeconds":1}}}`}, nil),
		stream(lines[3:4], make(chan string)),
	)
	w, _ := watchPod(t, f, "")
	waitFor(t, w, "rv 581", hasRV("581"))
	reqs := f.got()
	checkWatch(t, reqs[1], "580")
	checkWatch(t, reqs[2], "580") // a 500 in the stream keeps the resume point
	if gap := reqs[2].At.Sub(reqs[1].At); gap < 900*time.Millisecond {
		t.Errorf("retried after %s, want the ERROR's retryAfterSeconds 1", gap)
	}
}

func TestWatchClosedAtOnceBacksOff(t *testing.T) {
	fastTiming(t)
	backoffFirst, backoffMax = 200*time.Millisecond, time.Second
	f := newFakeAPI(t)
	for range 50 {
		f.answer(stream(nil, nil)) // 200, then nothing: a server that hangs up at once
	}
	watchPod(t, f, "")
	time.Sleep(time.Second)
	if n := len(f.got()); n > 8 {
		t.Errorf("%d watch requests in a second against a server that hangs up at once: a hot loop", n)
	}
}

func TestReadEventsLimitsEventSize(t *testing.T) {
	saved := maxEventSize
	maxEventSize = 64 << 10
	t.Cleanup(func() { maxEventSize = saved })
	big := `{"type":"ADDED","object":{"metadata":{"name":"x","annotations":{"a":"` + strings.Repeat("x", 2*maxEventSize) + `"}}}}`
	err := readEvents(strings.NewReader(big), func(event) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("err = %v, want the size limit", err)
	}
	// Many events adding up to more than the limit are fine.
	line := recorded(t, "watch-lifecycle.jsonl")[0] + "\n"
	var sb strings.Builder
	for sb.Len() <= maxEventSize+len(line) {
		sb.WriteString(line)
	}
	n := 0
	if err := readEvents(strings.NewReader(sb.String()), func(event) error { n++; return nil }); err != nil || n < 2 {
		t.Errorf("%d events, err %v", n, err)
	}
}

// periodicBookmark is the bookmark a server sends about once a minute: no
// initial-events-end annotation, so it says nothing about the Pod.
const periodicBookmark = `{"type":"BOOKMARK","object":{"kind":"Pod","apiVersion":"v1","metadata":{"resourceVersion":"600"},"spec":{"containers":null},"status":{}}}`

func TestWatchFallbackGETNotEndedByABookmark(t *testing.T) {
	fastTiming(t)
	t.Run("periodic bookmark while the watch is silent", func(t *testing.T) {
		f := newFakeAPI(t)
		f.answer(stream([]string{periodicBookmark}, make(chan string)), raw(http.StatusNotFound, f.file("get-absent.json")))
		w, _ := watchPod(t, f, "")
		st := waitFor(t, w, "gone", func(s podState) bool { return s.gone != nil })
		if !strings.Contains(st.gone.Error(), "not found: set POD_NAME") {
			t.Errorf("error %q lacks the POD_NAME hint", st.gone)
		}
	})
	t.Run("bookmark, the stream ends, the watch resumes from it", func(t *testing.T) {
		f := newFakeAPI(t)
		absent := raw(http.StatusNotFound, f.file("get-absent.json"))
		// By path: under load, a GET could come before the first watch ends.
		f.answer(route(stream([]string{periodicBookmark}, nil), absent), route(stream(nil, make(chan string)), absent), absent)
		w, _ := watchPod(t, f, "")
		st := waitFor(t, w, "gone", func(s podState) bool { return s.gone != nil })
		if !strings.Contains(st.gone.Error(), "not found: set POD_NAME") {
			t.Errorf("error %q lacks the POD_NAME hint", st.gone)
		}
		var resumed, checked bool
		for _, r := range f.got() {
			resumed = resumed || r.Query.Get("resourceVersion") == "600"
			checked = checked || r.Path == "/api/v1/namespaces/rec3/pods/job-1" && resumed
		}
		if !resumed || !checked {
			t.Errorf("requests %+v, want a watch from the bookmark's resourceVersion 600, then GET pods/job-1", f.got())
		}
	})
}

func TestWatchFallbackGETForbiddenIsFatalAfterAWhile(t *testing.T) {
	fastTiming(t)
	f := newFakeAPI(t)
	f.answer(stream(nil, make(chan string))) // an old server: silence for a missing Pod
	for range 90 {
		f.answer(raw(http.StatusForbidden, `{"kind":"Status","code":403,"message":"pods \"job-1\" is forbidden: User cannot get resource \"pods\""}`))
	}
	start := time.Now()
	w, logs := watchPod(t, f, "")
	st := waitFor(t, w, "gone", func(s podState) bool { return s.gone != nil })
	if d := time.Since(start); d < watchFallbackAfter+forbiddenFor || d > watchFallbackAfter+forbiddenFor+700*time.Millisecond {
		t.Errorf("gave up after %s, want soon after %s", d, watchFallbackAfter+forbiddenFor)
	}
	if !strings.Contains(st.gone.Error(), "403 Forbidden") || !strings.Contains(st.gone.Error(), "cannot get") {
		t.Errorf("error %q, want the GET's 403", st.gone)
	}
	if !strings.Contains(logs.String(), `"level":"ERROR","msg":"checking that the pod exists forbidden`) {
		t.Errorf("logs lack the ERROR with the missing rule:\n%s", logs)
	}
}

func TestWatchFallbackGETHonoursRetryAfter(t *testing.T) {
	fastTiming(t)
	f := newFakeAPI(t)
	f.answer(stream(nil, make(chan string)),
		raw(http.StatusTooManyRequests, `{"kind":"Status","code":429,"message":"too many requests"}`, "Retry-After", "1"),
		raw(http.StatusNotFound, f.file("get-absent.json")))
	w, _ := watchPod(t, f, "")
	waitFor(t, w, "gone", func(s podState) bool { return s.gone != nil })
	reqs := f.got()
	if gap := reqs[2].At.Sub(reqs[1].At); gap < 900*time.Millisecond {
		t.Errorf("GET retried after %s, want Retry-After's 1s", gap)
	}
}

func TestWatchStalledStreamIsWatchedAgain(t *testing.T) {
	fastTiming(t)
	saved := watchIdleTimeout
	t.Cleanup(func() { watchIdleTimeout = saved })
	lines := recorded(t, "watch-lifecycle.jsonl")
	t.Run("silent stream", func(t *testing.T) {
		watchIdleTimeout = 500 * time.Millisecond
		f := newFakeAPI(t)
		f.answer(stream(lines[:3], make(chan string)), stream(lines[3:4], make(chan string)))
		w, logs := watchPod(t, f, "")
		waitFor(t, w, "rv 581", hasRV("581"))
		reqs := f.got()
		checkWatch(t, reqs[1], "580") // resumed from the last MODIFIED
		if gap := reqs[1].At.Sub(reqs[0].At); gap < watchIdleTimeout || gap > watchIdleTimeout+3*time.Second {
			t.Errorf("watched again %s after the stream went silent, want %s (+ at most a second's spread)", gap, watchIdleTimeout)
		}
		if !strings.Contains(logs.String(), "watch stalled") {
			t.Errorf("logs lack the stall:\n%s", logs)
		}
	})
	t.Run("events keep it alive", func(t *testing.T) {
		watchIdleTimeout = time.Second
		f := newFakeAPI(t)
		live := make(chan string)
		f.answer(stream(lines[:1], live))
		w, _ := watchPod(t, f, "")
		waitFor(t, w, "rv 579", hasRV("579"))
		for i := range 10 { // 1.5 s of events, 150 ms apart
			time.Sleep(150 * time.Millisecond)
			live <- strings.Replace(periodicBookmark, `"600"`, `"`+strconv.Itoa(600+i)+`"`, 1)
		}
		if n := len(f.got()); n != 1 {
			t.Errorf("made %d requests, want 1: a stream with events is alive", n)
		}
	})
}

func TestWatchLasting401IsFatal(t *testing.T) {
	fastTiming(t)
	watchFallbackAfter = time.Minute // only watch requests: under load the GET could come first
	f := newFakeAPI(t)
	f.answer(func(w http.ResponseWriter, r *http.Request) {
		f.setToken("token-2") // a fresh token that the server refuses too
		raw(http.StatusUnauthorized, f.file("unauthorized.json"))(w, r)
	})
	for range 90 {
		f.answer(raw(http.StatusUnauthorized, f.file("unauthorized.json")))
	}
	start := time.Now()
	w, _ := watchPod(t, f, "")
	st := waitFor(t, w, "gone", func(s podState) bool { return s.gone != nil })
	if d := time.Since(start); d < forbiddenFor || d > forbiddenFor+700*time.Millisecond {
		t.Errorf("gave up after %s, want soon after %s of 401s", d, forbiddenFor)
	}
	for _, want := range []string{"401 Unauthorized", "ServiceAccount", "signing key", "subPath"} {
		if !strings.Contains(st.gone.Error(), want) {
			t.Errorf("error %q lacks %q", st.gone, want)
		}
	}
	reqs := f.got()
	if reqs[1].Token != "token-2" {
		t.Errorf("second request with token %q, want the re-read token-2", reqs[1].Token)
	}
}

// An error answer whose body never ends (a connection that freezes after the
// headers) must not hold the watch loop until the request's own deadline
// (330-630 s): the body is read for errorBodyTimeout at most.
func TestWatchErrorBodyThatNeverEnds(t *testing.T) {
	fastTiming(t)
	saved := errorBodyTimeout
	errorBodyTimeout = 300 * time.Millisecond
	t.Cleanup(func() { errorBodyTimeout = saved })
	f := newFakeAPI(t)
	lines := recorded(t, "watch-lifecycle.jsonl")
	f.answer(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"kind":"Status",`))
		w.(http.Flusher).Flush()
		<-r.Context().Done() // the rest never comes
	}, stream(lines[:1], make(chan string)))
	w, _ := watchPod(t, f, "")
	start := time.Now()
	waitFor(t, w, "the pod from the second watch", func(s podState) bool { return s.pod != nil })
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the second watch came %s later, want soon after the error body's %s", d.Round(time.Millisecond), errorBodyTimeout)
	}
}
