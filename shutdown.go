package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"syscall"
	"time"
)

const (
	defaultShutdownTimeout = 30 * time.Second // the API server's default grace period
	shutdownAttemptTimeout = 5 * time.Second
	firstAttemptMin        = 500 * time.Millisecond
	// deletionWait is how long after a TERM the watch may take to show the
	// Pod's deletion, which normally comes first.
	deletionWait = time.Second
	// refusedWithoutStatus bounds the retries of a refused connection when
	// no status can tell that the sidecar has exited: a refused connection
	// then most likely means it has.
	refusedWithoutStatus = 3 * time.Second
)

var (
	// errNotNeeded ends shutdown requests and the wait for signalled
	// processes once the sidecars have exited (an exited sidecar refuses
	// connections, which must not hold proa until the deadline), or the
	// Pod is gone.
	errNotNeeded = errors.New("the sidecars exited")
	errDeadline  = errors.New("shutdown deadline passed")
)

// shutdownDeadline is --shutdown-timeout, else the Pod's grace period: that
// of its deletion when it is being deleted, else terminationGracePeriodSeconds,
// else 30 s.
func shutdownDeadline(c *config, p *pod) time.Duration {
	switch {
	case c.shutdownTimeoutOK:
		return c.shutdownTimeout
	case p != nil && p.Metadata.DeletionGracePeriodSeconds != nil && *p.Metadata.DeletionGracePeriodSeconds >= 0:
		return time.Duration(*p.Metadata.DeletionGracePeriodSeconds) * time.Second
	case p != nil && p.Spec.TerminationGracePeriodSeconds != nil && *p.Spec.TerminationGracePeriodSeconds >= 0:
		return time.Duration(*p.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	return defaultShutdownTimeout
}

// endOfShutdown is when shutdown must be over: its start plus the grace
// period, or --shutdown-timeout. When proa is being stopped (a TERM or INT
// came, or the Pod is being deleted), the kubelet's SIGKILL comes at the
// end of the grace period counted from the deletion, whose deletionTimestamp
// says when, or from the signal: without --shutdown-timeout, proa then
// finishes a second before the earliest, so that its exit code, the
// command's, is the one the kubelet records, not 137. It is recomputed
// whenever a signal or the deletion arrives.
func endOfShutdown(c *config, p *pod, start, terminating time.Time) time.Time {
	limit := shutdownDeadline(c, p)
	end := start.Add(limit)
	if c.shutdownTimeoutOK {
		return end
	}
	if !terminating.IsZero() {
		end = minTime(end, terminating.Add(limit-time.Second))
	}
	if due, deleting := p.deletion(); deleting && !due.IsZero() {
		end = minTime(end, due.Add(-time.Second))
	}
	return end
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// shutdown stops the sidecars (SPEC §6): unless the kubelet will restart
// proa's container (step 0), it sends the shutdown requests and signals
// (steps 1 and 2), and waits until the sidecars have exited (steps 3 and 4)
// or the deadline passes. code is proa's exit code, which nothing here
// changes. self is proa's container, "" when unknown.
func shutdown(ctx context.Context, c *config, w *podWatcher, self string, code int, sigs *signals, log *slog.Logger) {
	if !c.canStopSidecars() {
		log.Info("not waiting for the sidecars: no -g, -p, -k or -K can stop them")
		return
	}
	if w != nil && self != "" && leaveSidecarsRunning(ctx, w, self, code, sigs, log) {
		return
	}
	if w != nil && self != "" && !w.isGone() && len(c.sidecars) > 0 && !lastMainContainer(ctx, w, self, c.sidecars, sigs, log) {
		return
	}
	s := &stopper{c: c, w: w, self: self, sigs: sigs, log: log, start: time.Now(), accepted: make(chan struct{})}
	s.run(ctx)
}

// leaveSidecarsRunning is step 0: when the kubelet will restart proa's own
// container (its restart policy is Always, or OnFailure and code is not 0)
// and the Pod is not being deleted, stopping the sidecars would break the
// restarted command (a sidecar that exited 0 is not restarted under
// OnFailure) or cut a Deployment's traffic for nothing. A TERM alone does
// not tell: the kubelet also sends one to restart a container whose
// liveness probe failed; the deletion, which normally comes first, shows in
// the watch.
func leaveSidecarsRunning(ctx context.Context, w *podWatcher, self string, code int, sigs *signals, log *slog.Logger) bool {
	st, _ := w.current()
	if st.pod == nil {
		return false
	}
	policy := ownRestartPolicy(st.pod, self)
	if willNotRestart(policy, code) {
		return false
	}
	term := sigs.terminating()
	if !term.IsZero() {
		st = awaitDeletion(ctx, w, term.Add(deletionWait))
	}
	if beingDeleted(st) {
		return false
	}
	args := []any{"restart_policy", policy, "code", code}
	if !term.IsZero() {
		args = append(args, "note", "a signal came, but the pod is not being deleted")
	}
	log.Info("leaving the sidecars running: the kubelet will restart this container", args...)
	return true
}

// awaitDeletion waits until the watch shows the Pod's deletion, or until
// the time given, and returns the latest state.
func awaitDeletion(ctx context.Context, w *podWatcher, until time.Time) podState {
	timeout := time.NewTimer(time.Until(until))
	defer timeout.Stop()
	for {
		st, changed := w.current()
		if beingDeleted(st) {
			return st
		}
		select {
		case <-changed:
		case <-timeout.C:
			return st
		case <-ctx.Done():
			return st
		}
	}
}

func beingDeleted(st podState) bool {
	_, deleting := st.pod.deletion()
	return deleting || errors.Is(st.gone, errDeleted)
}

// The reasons shutdown's wait ends.
const (
	waitDeleted  = "deleted"
	waitExited   = "exited"
	waitDone     = "done"
	waitLost     = "lost"
	waitDeadline = "deadline"
)

// waitView is what decides whether shutdown's wait is over.
type waitView struct {
	deleted      bool     // the Pod object is gone
	statuses     bool     // the sidecars' statuses are waited for
	notExited    []string // with statuses: the sidecars that have not exited since shutdown began
	actionsDone  bool     // every request answered or given up, every signalled process gone
	lost         bool     // the API connection was lost after the stop was accepted
	pastDeadline bool
}

// waitOver decides whether shutdown's wait is over, and why. While statuses
// can tell, they decide; without them (no Kubernetes, no sidecar was
// running, or the Pod is being stopped, when the kubelet writes no status
// until proa has exited) the requests' answers and the signalled processes
// do. An API connection lost after the stop was accepted means the
// sidecars most likely exited (a service mesh carries it through the proxy
// just told to quit).
func waitOver(v waitView) (over bool, why string) {
	switch {
	case v.deleted:
		return true, waitDeleted
	case v.statuses && len(v.notExited) == 0:
		return true, waitExited
	case !v.statuses && v.actionsDone:
		return true, waitDone
	case v.lost:
		return true, waitLost
	case v.pastDeadline:
		return true, waitDeadline
	}
	return false, ""
}

// finish says why the wait ended.
func (s *stopper) finish(why string, v waitView) {
	elapsed := since(s.start)
	switch why {
	case waitDeleted:
		s.log.Info("pod deleted: not waiting for the sidecars", "elapsed", elapsed)
	case waitExited:
		s.log.Info("sidecars exited", "elapsed", elapsed)
	case waitDone:
		s.log.Info("shutdown requests and signals done", "elapsed", elapsed)
	case waitLost:
		s.log.Info("API connection lost after the stop was accepted: the sidecars most likely exited", "elapsed", elapsed)
	case waitDeadline:
		if v.statuses {
			s.log.Warn("not all sidecars exited", "err", fmt.Sprintf("still running at the shutdown deadline: %v", v.notExited), "elapsed", elapsed)
		} else {
			s.log.Warn("shutdown deadline passed", "elapsed", elapsed)
		}
	}
}

// lastMainContainer decides, with --sidecar, whether this proa stops the
// sidecars. Of the main containers still running, the last one in the Pod's
// spec does: it waits, however long it takes, until every other main
// container has terminated. Any other proa leaves at once. The order breaks
// the tie when several finish together: each of them sees the others still
// running (a peer shows as running until the kubelet reports it), but only
// one of them is last. When the Pod is being stopped (a TERM or INT came),
// there is nothing to wait for: the kubelet is stopping every container.
func lastMainContainer(ctx context.Context, w *podWatcher, self string, only []string, sigs *signals, log *slog.Logger) bool {
	start := time.Now()
	progress := time.NewTicker(progressEvery)
	defer progress.Stop()
	var sigc <-chan os.Signal
	if sigs != nil {
		sigc = sigs.c
	}
	logged := false
	for {
		st, changed := w.current()
		if st.gone != nil || st.pod == nil || !sigs.terminating().IsZero() {
			return true
		}
		later, others := runningPeers(st.pod, self, only)
		if len(later) > 0 {
			log.Info("a main container listed after this one is still running: it will stop the sidecars", "peers", later)
			return false
		}
		if len(others) == 0 {
			return true
		}
		if !logged {
			log.Info("waiting for the other main containers before stopping the sidecars", "peers", others)
			logged = true
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return true
		case <-progress.C:
			log.Info("waiting for the other main containers before stopping the sidecars", "peers", others, "elapsed", since(start))
		case sig := <-sigc:
			if sig == syscall.SIGTERM || sig == syscall.SIGINT {
				log.Warn("stopped waiting for the other main containers", "signal", signalName(sig))
				return true
			}
		}
	}
}

// runningPeers lists the peer main containers that have not terminated:
// those after self in the Pod's spec, and the others.
func runningPeers(p *pod, self string, only []string) (later, others []string) {
	_, peers := splitContainers(p, self, only)
	running := stillRunning(p, peers)
	after := false
	for _, c := range p.Spec.Containers {
		switch {
		case c.Name == self:
			after = true
		case slices.Contains(running, c.Name) && after:
			later = append(later, c.Name)
		case slices.Contains(running, c.Name):
			others = append(others, c.Name)
		}
	}
	return later, others
}

// requestLimits bound a shutdown request's retries; they may change while
// it runs (a TERM or the Pod's deletion moves the deadline).
type requestLimits interface {
	deadline() time.Time
	// refusedFor, when > 0, is how long refused connections are retried.
	refusedFor() time.Duration
}

// shutdownRequest sends one shutdown request, retrying connection errors and
// 5xx answers with backoff until the deadline or until ctx ends, and returns
// the answer's status. The first attempt is made even when the deadline has
// already passed or ctx has ended, with at least firstAttemptMin to answer:
// a sidecar on localhost answers in a millisecond.
func shutdownRequest(ctx context.Context, client *http.Client, method, url string, lim requestLimits) (status string, err error) {
	rec := &statusRecorder{next: client.Transport}
	if rec.next == nil {
		rec.next = http.DefaultTransport
	}
	client = &http.Client{Transport: rec, CheckRedirect: client.CheckRedirect, Jar: client.Jar}
	start := time.Now()
	delay := 100 * time.Millisecond
	for attempt := 0; ; attempt++ {
		limit := min(shutdownAttemptTimeout, time.Until(lim.deadline()))
		actx, release := ctx, context.CancelFunc(func() {})
		if attempt == 0 {
			limit = max(limit, firstAttemptMin)
			actx, release = atLeast(ctx, firstAttemptMin)
		}
		err = shutdownAttempt(actx, client, method, url, limit)
		release()
		var final *finalError
		if err == nil {
			return rec.status, nil
		}
		if errors.As(err, &final) || ctx.Err() != nil || time.Until(lim.deadline()) <= delay {
			return "", err
		}
		if refused := lim.refusedFor(); refused > 0 && errors.Is(err, syscall.ECONNREFUSED) && time.Since(start)+delay > refused {
			return "", err
		}
		select {
		case <-ctx.Done():
			return "", err
		case <-time.After(delay):
		}
		delay = min(2*delay, 2*time.Second)
	}
}

// statusRecorder notes the status of the last answer, for the log.
type statusRecorder struct {
	next   http.RoundTripper
	status string
}

func (r *statusRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.next.RoundTrip(req)
	if err == nil {
		r.status = resp.Status
	}
	return resp, err
}

// atLeast is a context that ends when ctx does, but not before d has passed.
func atLeast(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	out, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	earliest := time.Now().Add(d)
	stop := context.AfterFunc(ctx, func() {
		time.AfterFunc(time.Until(earliest), func() { cancel(context.Cause(ctx)) })
	})
	return out, func() { stop(); cancel(context.Canceled) }
}

// finalError is an answer that retrying will not change (4xx).
type finalError struct{ status string }

func (e *finalError) Error() string { return e.status }

func shutdownAttempt(ctx context.Context, client *http.Client, method, url string, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return &finalError{err.Error()}
	}
	req.Header.Set("User-Agent", "proa/"+proaVersion())
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	switch {
	case resp.StatusCode < 400:
		return nil
	case resp.StatusCode < 500:
		return &finalError{resp.Status}
	}
	return errors.New(resp.Status)
}

// withoutURL drops the method and URL net/http puts in front of a request's
// error (Post "http://...": dial tcp ...), for logs that name them in
// fields of their own.
func withoutURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// since is the time elapsed since t, for logs.
func since(t time.Time) string {
	return time.Since(t).Round(time.Millisecond).String()
}

func pids(procs []process) []int {
	var out []int
	for _, p := range procs {
		out = append(out, p.pid)
	}
	return out
}
