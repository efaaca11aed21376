package main

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// stopper is one shutdown's steps 1 to 4: it sends the requests and the
// signals, and decides, as the Pod's state, the signals and the answers
// come, when to stop waiting.
type stopper struct {
	c     *config
	w     *podWatcher // nil without the Kubernetes API
	self  string      // proa's container, "" when unknown: then no status is waited for
	sigs  *signals
	log   *slog.Logger
	start time.Time

	end      atomic.Int64 // the deadline, unix nanoseconds: it moves with signals and the deletion
	noStatus atomic.Bool  // no status will tell that the sidecars exited

	acceptOnce sync.Once
	accepted   chan struct{} // closed once a request was answered or a signal delivered
	acceptedAt int           // the watch's attempts then, set before accepted is closed
}

func (s *stopper) deadline() time.Time { return time.Unix(0, s.end.Load()) }

func (s *stopper) refusedFor() time.Duration {
	if s.noStatus.Load() {
		return refusedWithoutStatus
	}
	return 0
}

// accept notes that a sidecar accepted the stop.
func (s *stopper) accept() {
	s.acceptOnce.Do(func() {
		if s.w != nil {
			st, _ := s.w.current()
			s.acceptedAt = st.attempts
			s.w.retrySoon()
		}
		close(s.accepted)
	})
}

func (s *stopper) state() (podState, <-chan struct{}) {
	if s.w == nil {
		return podState{}, nil
	}
	return s.w.current()
}

// follow recomputes the deadline from the Pod's latest state and the
// signals, and tells whether the Pod is being stopped.
func (s *stopper) follow(st podState) (stopping bool) {
	term := s.sigs.terminating()
	s.end.Store(endOfShutdown(s.c, st.pod, s.start, term).UnixNano())
	_, deleting := st.pod.deletion()
	return !term.IsZero() || deleting
}

func (s *stopper) run(ctx context.Context) {
	st, changed := s.state()
	var sidecars []sidecar
	if st.pod != nil && s.self != "" {
		sidecars, _ = splitContainers(st.pod, s.self, s.c.sidecars)
	}
	before := st.pod
	// The sidecars' statuses say when they have exited, if one is running.
	statusWait := st.gone == nil && len(stillRunning(before, sidecars)) > 0
	if stopping := s.follow(st); stopping || !statusWait {
		s.noStatus.Store(true) // before the requests start
	}

	actions, stopActions := context.WithCancelCause(ctx)
	defer stopActions(nil)
	var wg sync.WaitGroup
	s.sendRequests(actions, &wg)
	s.signalProcesses(actions, &wg)
	actionsDone := make(chan struct{})
	go func() { wg.Wait(); close(actionsDone) }()

	timer := time.NewTimer(time.Until(s.deadline()))
	defer timer.Stop()
	term, done, accepted := s.sigs.terminated(), (<-chan struct{})(actionsDone), (<-chan struct{})(s.accepted)
	loggedStopping := false
	for {
		stopping := s.follow(st)
		statuses := statusWait && !stopping && st.gone == nil
		s.noStatus.Store(!statuses)
		if stopping && statusWait && !loggedStopping {
			s.log.Info("the pod is being stopped: not waiting for the sidecars' statuses, which the kubelet writes once proa has exited",
				"shutdown_deadline_in", time.Until(s.deadline()).Round(time.Millisecond).String())
			loggedStopping = true
		}
		v := waitView{
			deleted:      errors.Is(st.gone, errDeleted),
			statuses:     statuses,
			actionsDone:  closed(actionsDone),
			lost:         closed(s.accepted) && st.connectionLost(s.acceptedAt),
			pastDeadline: !time.Now().Before(s.deadline()),
		}
		if statuses {
			v.notExited = notExitedSince(st.pod, before, sidecars, s.start)
		}
		if over, why := waitOver(v); over {
			s.finish(why, v)
			if why == waitDeadline {
				stopActions(errDeadline)
			} else {
				stopActions(errNotNeeded)
			}
			break
		}
		timer.Reset(time.Until(s.deadline()))
		select {
		case <-changed:
		case <-term:
			term = nil
		case <-done:
			done = nil
		case <-accepted:
			accepted = nil
		case <-timer.C:
		case <-ctx.Done():
			stopActions(context.Cause(ctx))
			<-actionsDone
			return
		}
		st, changed = s.state()
	}
	<-actionsDone // quick: every request and wait ends with actions
}

func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// sendRequests starts the -g and -p requests, all at once.
func (s *stopper) sendRequests(ctx context.Context, wg *sync.WaitGroup) {
	n := len(s.c.getURLs) + len(s.c.postURLs)
	if n == 0 {
		return
	}
	s.log.Info("sending shutdown requests", "count", n, "timeout", max(time.Until(s.deadline()), 0).Round(time.Millisecond).String())
	client := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	send := func(method, url string) {
		wg.Go(func() {
			status, err := shutdownRequest(ctx, client, method, url, s)
			url, err := redact(url), withoutURL(err)
			switch {
			case err == nil:
				s.accept()
				s.log.Info("shutdown request answered", "method", method, "url", url, "status", status)
			case errors.Is(context.Cause(ctx), errNotNeeded):
				s.log.Debug("shutdown request no longer needed", "method", method, "url", url, "err", err)
			default:
				s.log.Warn("shutdown request failed", "method", method, "url", url, "err", err)
			}
		})
	}
	for _, u := range s.c.getURLs {
		send(http.MethodGet, u)
	}
	for _, u := range s.c.postURLs {
		send(http.MethodPost, u)
	}
}

// signalProcesses signals the processes -k and -K choose, and waits until
// they are gone, or ctx ends.
func (s *stopper) signalProcesses(ctx context.Context, wg *sync.WaitGroup) {
	signalled := killProcesses(s.c, s.log)
	if len(signalled) == 0 {
		return
	}
	s.accept()
	wg.Go(func() {
		left := waitProcessesGone(ctx, signalled)
		switch {
		case len(left) == 0:
			s.log.Info("signalled processes exited", "elapsed", since(s.start))
		case errors.Is(context.Cause(ctx), errDeadline):
			s.log.Warn("signalled processes still running at the shutdown deadline", "pids", pids(left))
		default:
			s.log.Debug("not waiting for the signalled processes any more", "pids", pids(left), "err", context.Cause(ctx))
		}
	})
}
