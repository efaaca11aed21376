package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// podWatcher follows one Pod with a single watch request, and keeps its
// latest state. Without a resourceVersion the API server starts the stream
// with the Pod's current, consistent state as a synthetic ADDED event, so no
// LIST is needed; a fault-free lifecycle costs exactly one request.
type podWatcher struct {
	c        *kubeClient
	ns, name string
	uid      string // POD_UID, when set
	log      *slog.Logger

	mu      sync.Mutex
	state   podState
	changed chan struct{} // closed and replaced on every change of state

	fallbackDone   atomic.Bool   // the fallback GET has answered: the Pod exists, or 404
	fallbackDenied accessDenied  // refusals of the fallback GET; one fallback runs at a time
	hurry          chan struct{} // see retrySoon; buffered, one at most
}

// podState is what the watcher knows. Once gone is set, it never changes.
type podState struct {
	pod     *pod  // latest state, nil until the first event
	gone    error // the Pod does not exist, was deleted, or cannot be watched
	lastErr error // the latest transient error, for progress logs
	// The watch requests so far, numbered from 1, with the number of the
	// latest that opened a stream and of the latest that could not: shutdown
	// tells from them that the API connection was lost (SPEC §6 step 4).
	attempts, opened, failed int
}

// connectionLost tells whether a watch request made after the first
// attempts could not be opened, and none has been opened since.
func (s podState) connectionLost(after int) bool {
	return s.failed > after && s.failed > s.opened
}

// Timing of the watch. Variables so that tests can shorten them.
var (
	watchFallbackAfter = 5 * time.Second  // no event yet: one GET decides whether the Pod exists
	forbiddenFor       = 30 * time.Second // 403s for this long are fatal
	backoffFirst       = 800 * time.Millisecond
	backoffMax         = 30 * time.Second
	backoffReset       = 2 * time.Minute // quiet time after which backoff starts over
	hurriedRetry       = 50 * time.Millisecond
	// A stream without any event for this long is dead: servers send a
	// BOOKMARK about once a minute. Over HTTP/1.1 nothing else notices.
	watchIdleTimeout = 3 * time.Minute
)

func newPodWatcher(c *kubeClient, ns, name, uid string, log *slog.Logger) *podWatcher {
	return &podWatcher{c: c, ns: ns, name: name, uid: uid, log: log, changed: make(chan struct{}), hurry: make(chan struct{}, 1)}
}

// current returns the latest state and a channel that is closed when it
// changes.
func (w *podWatcher) current() (podState, <-chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.state, w.changed
}

func (w *podWatcher) update(f func(*podState)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state.gone != nil {
		return
	}
	f(&w.state)
	close(w.changed)
	w.changed = make(chan struct{})
}

func (w *podWatcher) isGone() bool {
	s, _ := w.current()
	return s.gone != nil
}

// watchPath is the collection path; the field selector narrows it to one
// Pod, which RBAC also accepts for a Role limited by resourceNames.
func (w *podWatcher) watchPath() string {
	return "/api/v1/namespaces/" + url.PathEscape(w.ns) + "/pods"
}

// run watches until ctx ends or the Pod is gone.
func (w *podWatcher) run(ctx context.Context) {
	var (
		rv     string // resume point: the last MODIFIED, DELETED or BOOKMARK resourceVersion
		bo     backoff
		denied accessDenied
	)
	for ctx.Err() == nil && !w.isGone() {
		started := time.Now()
		w.update(func(s *podState) { s.attempts++ })
		events, err := w.watchOnce(ctx, &rv)
		if ctx.Err() != nil || w.isGone() {
			return
		}
		if err != nil && !answeredByAPI(err) {
			w.update(func(s *podState) {
				if s.opened < s.attempts {
					s.failed = s.attempts
				}
			})
		}
		var wait time.Duration
		var ae *apiError
		switch {
		case errors.Is(err, errStalled):
			// Not an error of the server's: watch again at once, from the
			// last resourceVersion.
			w.log.Warn("watch stalled: no event for "+watchIdleTimeout.String()+", watching again", "pod", w.ns+"/"+w.name, "resource_version", rv)
			err, wait = nil, rand.N(time.Second)
		case err == nil && (events > 0 || time.Since(started) > time.Second):
			// The server closed the stream at timeoutSeconds, or while shutting
			// down: resume at once, spread over a second so that thousands of
			// Pods do not come back in the same instant.
			w.log.Debug("watch ended, resuming", "resource_version", rv)
			wait = rand.N(time.Second)
		case err == nil:
			err = errors.New("watch closed at once without events")
			wait = bo.next()
		case errors.As(err, &ae):
			wait = bo.next()
			if ae.retryAfter > 0 {
				wait = ae.retryAfter
			}
			switch ae.Code {
			case http.StatusUnauthorized:
				w.c.token.expire()
			case http.StatusForbidden:
				w.log.Error("watching pod forbidden: grant the service account a Role with this rule, and a RoleBinding",
					"pod", w.ns+"/"+w.name, "rule", podsRule, "err", err)
			case http.StatusGone:
				rv = "" // too old: start over with the current state
			}
		default:
			wait = bo.next()
		}
		if left, refused := denied.record(ae); refused {
			if left <= 0 {
				w.setGone(denied.fatal("watching pod "+w.ns+"/"+w.name, err))
				return
			}
			wait = min(wait, left) // one last try when the time is up, not a backoff later
		}
		var hurry <-chan struct{}
		if err != nil {
			if ae == nil || ae.Code != http.StatusForbidden {
				w.log.Warn("watch failed, retrying", "pod", w.ns+"/"+w.name, "err", err, "retry_in", wait.Round(time.Millisecond).String())
			}
			w.update(func(s *podState) { s.lastErr = fmt.Errorf("watching pod %s/%s: %w", w.ns, w.name, err) })
			hurry = w.hurry
		}
		pause(ctx, wait, hurry)
	}
}

// pause waits before the next watch request, or hurriedRetry once hurry
// delivers: the stop may be accepted before the failure or during its wait.
func pause(ctx context.Context, wait time.Duration, hurry <-chan struct{}) {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return
	case <-timer.C:
		return
	case <-hurry:
	}
	timer.Reset(hurriedRetry)
	select {
	case <-ctx.Done():
	case <-timer.C:
	}
}

// answeredByAPI tells an answer from the API server itself (4xx: the
// connection works) from a failed connection or a 5xx, which a proxy going
// away also gives (SPEC §6 step 4 counts only those).
func answeredByAPI(err error) bool {
	var ae *apiError
	return errors.As(err, &ae) && ae.Code < 500
}

// podsRule is the Role rule proa needs.
const podsRule = `{apiGroups: [""], resources: ["pods"], verbs: ["get", "watch"]}`

// accessDenied times refusals: 403s, and 401s that go on after the token
// was read afresh, are fatal once they have lasted forbiddenFor (neither
// fixes itself quickly, and the default --timeout waits for ever).
type accessDenied struct {
	since  time.Time // first refusal that counts; zero when access works
	code   int       // its status
	reread bool      // a 401 made the token be read again
}

// record notes the outcome of a request (ae nil: not an API error). It
// reports whether access is refused, and for how much longer that may go on.
func (d *accessDenied) record(ae *apiError) (left time.Duration, refused bool) {
	code := 0
	if ae != nil {
		code = ae.Code
	}
	if code != http.StatusUnauthorized && code != http.StatusForbidden {
		*d = accessDenied{}
		return 0, false
	}
	if code == http.StatusUnauthorized && !d.reread {
		// The token sent may have been up to a minute old: the clock starts
		// with the first 401 to a token read after a 401.
		d.reread = true
		return forbiddenFor, true
	}
	if d.since.IsZero() || d.code != code {
		d.since, d.code = time.Now(), code
	}
	return forbiddenFor - time.Since(d.since), true
}

// fatal is the error that ends the wait, saying what to check; doing says
// what was refused.
func (d *accessDenied) fatal(doing string, err error) error {
	if d.code == http.StatusUnauthorized {
		return fmt.Errorf("%s: the API server refused the service-account token for %s, read afresh before every try (%w): "+
			"check that the Pod's ServiceAccount was not deleted and recreated, that the cluster's token signing key was not rotated, "+
			"and that the token is not mounted with subPath (such a mount never sees the kubelet's refreshed token)", doing, forbiddenFor, err)
	}
	return fmt.Errorf("%s: access denied for %s: %w", doing, forbiddenFor, err)
}

func (w *podWatcher) setGone(err error) {
	w.update(func(s *podState) { s.gone = err })
}

// watchOnce makes one watch request and follows its stream until it ends. It
// returns how many events arrived, and nil when the server ended the stream
// cleanly.
func (w *podWatcher) watchOnce(ctx context.Context, rv *string) (int, error) {
	timeout := 300 + rand.IntN(301) // as client-go: spread reconnects of many clients
	ctx, cancel := context.WithTimeout(ctx, time.Duration(timeout+30)*time.Second)
	defer cancel()
	q := url.Values{
		"watch":               {"1"},
		"fieldSelector":       {"metadata.name=" + w.name},
		"allowWatchBookmarks": {"true"},
		"timeoutSeconds":      {strconv.Itoa(timeout)},
	}
	fromScratch := *rv == ""
	if !fromScratch {
		q.Set("resourceVersion", *rv)
	}
	resp, err := w.c.get(ctx, w.watchPath(), q)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if !w.fallbackDone.Load() && !w.podSeen() {
		// Servers without watch-list send nothing at all for a missing Pod,
		// whether the watch starts from scratch or resumes after a bookmark.
		// The clock starts once the stream is open: it times silence.
		fctx, stopFallback := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); w.fallbackGET(fctx, cancel) }()
		defer func() { stopFallback(); <-done }()
	}
	w.update(func(s *podState) { s.lastErr, s.opened = nil, s.attempts })

	// A connection can stay open and deliver nothing (a frozen proxy, a
	// dead peer over HTTP/1.1, which has no pings): cancel the request
	// once no event came for watchIdleTimeout.
	var stalled atomic.Bool
	idle := time.AfterFunc(watchIdleTimeout, func() { stalled.Store(true); cancel() })
	defer idle.Stop()
	events := 0
	sawPod := false
	err = readEvents(resp.Body, func(ev event) error {
		idle.Reset(watchIdleTimeout)
		events++
		w.log.Debug("watch event", "type", ev.Type, "resource_version", ev.resourceVersion())
		switch ev.Type {
		case "ADDED", "MODIFIED":
			if w.uid != "" && ev.Pod.Metadata.UID != w.uid {
				w.setGone(fmt.Errorf("pod %s/%s has uid %s, but POD_UID is %s: it is not this Pod", w.ns, w.name, ev.Pod.Metadata.UID, w.uid))
				return errStop
			}
			// A synthetic ADDED carries the Pod's own resourceVersion, which
			// may be older than the watch cache's window: never resume from it.
			if ev.Type == "MODIFIED" {
				*rv = ev.Pod.Metadata.ResourceVersion
			}
			sawPod = true
			w.update(func(s *podState) { s.pod = ev.Pod })
		case "DELETED":
			*rv = ev.Pod.Metadata.ResourceVersion
			w.setGone(fmt.Errorf("pod %s/%s %w", w.ns, w.name, errDeleted))
			return errStop
		case "BOOKMARK":
			*rv = ev.Pod.Metadata.ResourceVersion
			if fromScratch && ev.initialEventsEnd() && !sawPod {
				w.setGone(notFound(w.ns, w.name))
				return errStop
			}
		case "ERROR":
			return ev.Status
		}
		return nil
	})
	switch {
	case stalled.Load():
		err = errStalled
	case errors.Is(err, errStop):
		err = nil
	}
	return events, err
}

var (
	errStop    = errors.New("stop reading")
	errDeleted = errors.New("was deleted")
	errStalled = errors.New("watch stalled")
)

// podSeen reports whether the watch has shown the Pod: it exists.
func (w *podWatcher) podSeen() bool {
	s, _ := w.current()
	return s.pod != nil
}

func notFound(ns, name string) error {
	return fmt.Errorf("pod %s/%s not found: set POD_NAME from the downward API (env: [{name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]) if the hostname is not the Pod's name", ns, name)
}

// fallbackGET decides, on servers that send nothing for a missing Pod,
// whether it exists: while the watch has not shown the Pod (a periodic
// BOOKMARK says nothing about it), it GETs the Pod until it has an answer
// (the Pod, or 404), backing off on errors. Refusals count as on the watch.
func (w *podWatcher) fallbackGET(ctx context.Context, stopWatch context.CancelFunc) {
	var bo backoff
	for wait := watchFallbackAfter; ; {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if w.podSeen() || w.fallbackDone.Load() {
			return
		}
		resp, err := w.c.get(ctx, w.watchPath()+"/"+url.PathEscape(w.name), nil)
		var ae *apiError
		errors.As(err, &ae)
		wait = bo.next()
		if ae != nil && ae.retryAfter > 0 {
			wait = ae.retryAfter
		}
		switch {
		case err == nil:
			resp.Body.Close()
			w.fallbackDone.Store(true)
			return
		case ae != nil && ae.Code == http.StatusNotFound:
			w.fallbackDone.Store(true)
			w.setGone(notFound(w.ns, w.name))
			stopWatch()
			return
		case ae != nil && ae.Code == http.StatusUnauthorized:
			w.c.token.expire()
			w.log.Warn("checking that the pod exists failed, retrying", "pod", w.ns+"/"+w.name, "err", err)
		case ae != nil && ae.Code == http.StatusForbidden:
			w.log.Error("checking that the pod exists forbidden: grant the service account a Role with this rule, and a RoleBinding",
				"pod", w.ns+"/"+w.name, "rule", podsRule, "err", err)
		case ctx.Err() == nil:
			w.log.Warn("checking that the pod exists failed, retrying", "pod", w.ns+"/"+w.name, "err", err)
		}
		if ctx.Err() != nil {
			return
		}
		if left, refused := w.fallbackDenied.record(ae); refused {
			if left <= 0 {
				w.setGone(w.fallbackDenied.fatal("checking that pod "+w.ns+"/"+w.name+" exists", err))
				stopWatch()
				return
			}
			wait = min(wait, left)
		}
	}
}

// event is one decoded watch event. Pod is set for ADDED, MODIFIED, DELETED
// and BOOKMARK (a bookmark's Pod has only metadata); Status for ERROR.
type event struct {
	Type   string
	Pod    *pod
	Status *apiError
}

func (e event) resourceVersion() string {
	if e.Pod == nil {
		return ""
	}
	return e.Pod.Metadata.ResourceVersion
}

func (e event) initialEventsEnd() bool {
	return e.Pod != nil && e.Pod.Metadata.Annotations["k8s.io/initial-events-end"] == "true"
}

// readEvents decodes a watch stream and calls fn for each event until the
// stream ends (nil), fn returns an error, or the stream is broken: a
// truncated or malformed event is an error, never a crash.
func readEvents(r io.Reader, fn func(event) error) error {
	limit := &frameLimit{r: r}
	dec := json.NewDecoder(limit)
	for {
		limit.n = 0
		var raw struct {
			Type   string          `json:"type"`
			Object json.RawMessage `json:"object"`
		}
		if err := dec.Decode(&raw); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("reading watch stream: %w", err)
		}
		ev, err := decodeEvent(raw.Type, raw.Object)
		if err != nil {
			return err
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
}

func decodeEvent(typ string, obj json.RawMessage) (event, error) {
	ev := event{Type: typ}
	switch typ {
	case "ADDED", "MODIFIED", "DELETED", "BOOKMARK":
		ev.Pod = new(pod)
		if err := json.Unmarshal(obj, ev.Pod); err != nil {
			return ev, fmt.Errorf("decoding %s event: %w", typ, err)
		}
		if typ != "BOOKMARK" && ev.Pod.Metadata.Name == "" {
			return ev, fmt.Errorf("decoding %s event: object has no metadata.name", typ)
		}
	case "ERROR":
		var st struct {
			apiError
			Details struct {
				RetryAfterSeconds int `json:"retryAfterSeconds"`
			} `json:"details"`
		}
		if err := json.Unmarshal(obj, &st); err != nil {
			return ev, fmt.Errorf("decoding ERROR event: %w", err)
		}
		ev.Status = &st.apiError
		if ev.Status.Code == 0 {
			ev.Status.Code = http.StatusInternalServerError
		}
		if d := time.Duration(st.Details.RetryAfterSeconds) * time.Second; d > 0 {
			ev.Status.retryAfter = min(d, time.Minute)
		}
	default:
		return ev, fmt.Errorf("watch event of unknown type %q", typ)
	}
	return ev, nil
}

// maxEventSize bounds one watch event, as client-go does: a broken or
// hostile stream must not make proa buffer without end. A variable for
// tests.
var maxEventSize = 16 << 20

// frameLimit fails a read once more than maxEventSize bytes were read since
// n was last reset (before each event).
type frameLimit struct {
	r io.Reader
	n int
}

func (f *frameLimit) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if f.n += n; f.n > maxEventSize {
		return n, fmt.Errorf("watch event larger than %d bytes", maxEventSize)
	}
	return n, err
}

// backoff has client-go's steps: 0.8 s doubling to 30 s, reset after two
// quiet minutes. Each delay is spread over [d/2, 3d/2), so that Pods that
// failed together do not retry together, and the mean delay is the step.
type backoff struct {
	delay time.Duration // the next nominal delay
	last  time.Time
}

func (b *backoff) next() time.Duration {
	now := time.Now()
	if b.delay == 0 || now.Sub(b.last) > backoffReset {
		b.delay = backoffFirst
	}
	d := b.delay
	b.delay = min(2*b.delay, backoffMax)
	b.last = now
	return d/2 + rand.N(d)
}

// retrySoon makes the next retry after a failure come at once, whatever the
// backoff has grown to, for that retry only, also when the failure came
// first and its retry is already waiting. Shutdown calls it once a sidecar
// has accepted the stop: proa's API connection may run through that sidecar
// (a service mesh's proxy, which may break the watch a moment before its
// answer arrives), and only a retry tells whether it has gone with it
// (SPEC §6 step 4).
func (w *podWatcher) retrySoon() {
	select {
	case w.hurry <- struct{}{}:
	default: // already asked
	}
}
