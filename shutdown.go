package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"
)

const (
	defaultShutdownTimeout = 30 * time.Second // the API server's default grace period
	shutdownAttemptTimeout = 5 * time.Second
	firstAttemptMin        = 500 * time.Millisecond
)

// errSidecarsExited cancels shutdown requests that are still retrying once
// every sidecar has terminated: an exited sidecar refuses connections, and
// that must not hold proa until the deadline.
var errSidecarsExited = errors.New("sidecars exited")

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

// endOfShutdown is when shutdown must be over. After a TERM or INT (the
// kubelet stopping the Pod), the kubelet kills proa a grace period after
// that signal, not after the command's exit: without --shutdown-timeout,
// proa then finishes a second before, so that its exit code, the
// command's, is the one the kubelet records, not 137.
func endOfShutdown(c *config, p *pod, start, terminating time.Time) time.Time {
	limit := shutdownDeadline(c, p)
	end := start.Add(limit)
	if !terminating.IsZero() && !c.shutdownTimeoutOK {
		end = minTime(end, terminating.Add(limit-time.Second))
	}
	return end
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// shutdown asks the sidecars to stop and waits until they have exited or
// the deadline passes. Nothing it meets changes proa's exit code.
func shutdown(ctx context.Context, c *config, w *podWatcher, self string, sigs *signals, log *slog.Logger) {
	waitForPod := w != nil && self != "" && !w.isGone()
	if waitForPod && len(c.sidecars) > 0 && !lastMainContainer(ctx, w, self, c.sidecars, sigs, log) {
		return
	}
	var p *pod
	if w != nil {
		st, _ := w.current()
		p = st.pod
	}
	start := time.Now()
	deadline := endOfShutdown(c, p, start, sigs.terminating())
	limit := max(deadline.Sub(start), 0).Round(time.Millisecond)
	// Requests enforce the deadline themselves, so that each gets one
	// attempt even with a zero grace period.
	reqCtx, stopRequests := context.WithCancelCause(ctx)
	defer stopRequests(nil)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()

	if waitForPod && p != nil {
		if sidecars, _ := splitContainers(p, self, c.sidecars); len(stillRunning(p, sidecars)) == 0 {
			log.Info("sidecars exited", "elapsed", since(start), "note", "no sidecar container was running: nothing to stop")
			return
		}
	}
	// Without the Pod's status to tell that a sidecar has exited, a refused
	// connection most likely means it has: do not retry it for long.
	refusedFor := time.Duration(0)
	if !waitForPod {
		refusedFor = 3 * time.Second
	}
	var wg sync.WaitGroup
	if n := len(c.getURLs) + len(c.postURLs); n > 0 {
		log.Info("sending shutdown requests", "count", n, "timeout", limit.String())
		client := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
		send := func(method, url string) {
			wg.Go(func() {
				err := shutdownRequest(reqCtx, client, method, url, deadline, refusedFor)
				url := redact(url)
				switch {
				case err == nil:
					log.Debug("shutdown request answered", "method", method, "url", url)
				case errors.Is(context.Cause(reqCtx), errSidecarsExited):
					log.Debug("shutdown request no longer needed", "method", method, "url", url, "err", err)
				default:
					log.Warn("shutdown request failed", "method", method, "url", url, "err", err)
				}
			})
		}
		for _, u := range c.getURLs {
			send(http.MethodGet, u)
		}
		for _, u := range c.postURLs {
			send(http.MethodPost, u)
		}
	}

	if signalled := killProcesses(c, log); len(signalled) > 0 {
		wg.Go(func() {
			if left := waitProcessesGone(ctx, signalled); len(left) > 0 {
				log.Warn("signalled processes still running at the shutdown deadline", "pids", pids(left))
			} else {
				log.Info("signalled processes exited", "elapsed", since(start))
			}
		})
	}

	if waitForPod {
		switch err := waitSidecarsExited(ctx, w, self, c.sidecars); {
		case err == nil:
			log.Info("sidecars exited", "elapsed", since(start))
			stopRequests(errSidecarsExited)
		case errors.Is(err, errDeleted):
			log.Info("pod deleted: not waiting for the sidecars", "elapsed", since(start))
			stopRequests(errSidecarsExited)
		default:
			log.Warn("not all sidecars exited", "err", err, "elapsed", since(start))
		}
	}
	wg.Wait()
}

// waitSidecarsExited follows the Pod until every regular sidecar shows
// state.terminated, the Pod is gone, or ctx ends.
func waitSidecarsExited(ctx context.Context, w *podWatcher, self string, only []string) error {
	for {
		st, changed := w.current()
		if st.gone != nil {
			return st.gone
		}
		var running []string
		if st.pod != nil {
			sidecars, _ := splitContainers(st.pod, self, only)
			if running = stillRunning(st.pod, sidecars); len(running) == 0 {
				return nil
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			if st.pod == nil {
				return fmt.Errorf("no pod state before the shutdown deadline: %w", context.Cause(ctx))
			}
			return fmt.Errorf("still running at the shutdown deadline: %v", running)
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
				log.Warn("stopped waiting for the other main containers", "signal", sig.String())
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

// shutdownRequest sends one shutdown request, retrying connection errors and
// 5xx answers with backoff until the deadline or until ctx ends. The first
// attempt is made even when the deadline has already passed, with at least
// firstAttemptMin to answer: a sidecar on localhost answers in a millisecond. With refusedFor > 0, refused
// connections are retried only that long.
func shutdownRequest(ctx context.Context, client *http.Client, method, url string, deadline time.Time, refusedFor time.Duration) error {
	start := time.Now()
	delay := 100 * time.Millisecond
	for attempt := 0; ; attempt++ {
		limit := min(shutdownAttemptTimeout, time.Until(deadline))
		if attempt == 0 {
			limit = max(limit, firstAttemptMin)
		}
		err := shutdownAttempt(ctx, client, method, url, limit)
		var final *finalError
		if err == nil || errors.As(err, &final) {
			return err
		}
		if ctx.Err() != nil || time.Until(deadline) <= delay {
			return err
		}
		if refusedFor > 0 && errors.Is(err, syscall.ECONNREFUSED) && time.Since(start)+delay > refusedFor {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(delay):
		}
		delay = min(2*delay, 2*time.Second)
	}
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
