package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"proa/e2e/cluster"
)

// restart stops kube-apiserver (SIGTERM) under the fleet's open watches,
// starts it again, and waits until every waiter has a watch open on the new
// server: one answered 200 whose audit record is still at ResponseStarted
// (a watch that the server ended at once, as with an in-stream 410, has
// reached ResponseComplete).
func (f *fleet) restart(ctx context.Context, audit *auditTail, log func(string, ...any)) (restartScale, error) {
	var r restartScale
	c := f.cl
	log("%s: restarting kube-apiserver under %d watchers", f.tool, len(f.waiters))
	r.StopBegan = time.Now()
	if err := c.StopAPIServer(); err != nil {
		return r, err
	}
	r.Stopped = time.Now()
	if err := c.StartAPIServer(ctx); err != nil {
		return r, err
	}
	r.Ready = time.Now()
	log("%s: old server gone after %s, new one ready %s later", f.tool, fmtS(r.Stopped.Sub(r.StopBegan)), fmtS(r.Ready.Sub(r.Stopped)))
	deadline := r.Ready.Add(3 * time.Minute)
	var open map[string]time.Time
	for {
		reqs, err := audit.read()
		if err != nil {
			return r, err
		}
		open = map[string]time.Time{}
		for _, q := range reqs {
			if q.Verb == "watch" && q.ResponseStatus.Code == 200 && q.Stage == "ResponseStarted" && q.RequestReceived.After(r.Stopped) {
				open[auditPod(q)] = q.RequestReceived
			}
		}
		back := 0
		for _, w := range f.waiters {
			if _, ok := open[w.name]; ok || w.exited() {
				back++
			}
		}
		if back == len(f.waiters) {
			break
		}
		if time.Now().After(deadline) {
			log("%s: %d of %d waiters have no open watch 3 minutes after the restart", f.tool, len(f.waiters)-back, len(f.waiters))
			break
		}
		if err := sleepCtx(ctx, time.Second); err != nil {
			return r, err
		}
	}
	// A few quiet seconds catch any request still on its way.
	if err := sleepCtx(ctx, 5*time.Second); err != nil {
		return r, err
	}
	r.SettledAt = time.Now()
	reqs, err := audit.read()
	if err != nil {
		return r, err
	}
	window := between(reqs, r.StopBegan, r.SettledAt)
	r.Counts = verbCounts(window)
	for _, q := range window {
		if q.Verb == "watch" {
			if resumes(q) {
				r.Resumed++
			} else {
				r.Fresh++
			}
		}
	}
	r.Bins = perSecond(window, r.StopBegan, int(r.SettledAt.Sub(r.StopBegan)/time.Second)+1)
	for _, w := range f.waiters {
		if w.exited() {
			r.Exited++
			continue
		}
		t, ok := open[w.name]
		if !ok {
			r.NotBack++
			continue
		}
		r.Back = append(r.Back, t.Sub(r.Ready).Seconds())
		w.mu.Lock()
		for _, e := range w.expired {
			if e.After(r.StopBegan) {
				r.Expired++
			}
		}
		for _, e := range w.failed {
			if e.After(r.StopBegan) {
				r.Failed++
			}
		}
		w.mu.Unlock()
	}
	log("%s: %d back, %d not, %d exited; %d requests, %d 410 Expired", f.tool, len(r.Back), r.NotBack, r.Exited, len(window), r.Expired)
	return r, nil
}

// herdHold is how long the command runs in the scale run: longer than the
// herd, so that no waiter's shutdown (proa's requests, the sidecars'
// terminated statuses) competes with it.
const herdHold = 30 * time.Second

// herd makes every Pod's sidecar ready in one burst of status writes (100 at
// a time over the admin's connection) and measures, for each Pod, the time
// from the API server receiving its PATCH (the audit log's timestamp) to its
// command's first action: the write, the watch event and the waiter's
// reaction. The write is committed, and the event sent, before the audit
// log's completion timestamp of the PATCH, but under a burst that stamp
// comes late (the request's goroutine waits for a CPU), as does the PATCH's
// answer at the benchmark; so both are shown, and the waiter's own part:
// from the time in its "sidecars ready" line to its command's start.
func (f *fleet) herd(ctx context.Context, log func(string, ...any)) (herdScale, error) {
	h := herdScale{Writes: len(f.waiters)}
	log("%s: a herd: %d sidecars ready in one burst", f.tool, len(f.waiters))
	audit := newAuditTail(f.cl.AuditLog, "admin")
	t0 := time.Now()
	var last time.Time
	var mu sync.Mutex
	err := parallel(len(f.waiters), 100, func(i int) error {
		w := f.waiters[i]
		if err := f.cl.PatchPodStatus(ctx, f.ns, w.name, podStatus("ready")); err != nil {
			return fmt.Errorf("pod %s: %w", w.name, err)
		}
		mu.Lock()
		last = later(last, time.Now())
		mu.Unlock()
		return nil
	})
	if err != nil {
		return h, err
	}
	h.Burst = last.Sub(t0).Seconds()
	deadline := time.Now().Add(time.Minute)
	var starts map[string]time.Time
	for {
		if starts, err = stampStarts(f.events); err != nil {
			return h, err
		}
		if len(starts) >= len(f.waiters) || time.Now().After(deadline) {
			break
		}
		if err := sleepCtx(ctx, 500*time.Millisecond); err != nil {
			return h, err
		}
	}
	writes, err := audit.read()
	if err != nil {
		return h, err
	}
	written := map[string]cluster.AuditEvent{}
	for _, q := range writes {
		if q.Verb == "patch" && q.ResponseStatus.Code == 200 && strings.HasSuffix(queryPath(q), "/status") && !q.RequestReceived.Before(t0) {
			if name := auditPod(q); written[name].AuditID == "" {
				written[name] = q
			}
		}
	}
	for _, w := range f.waiters {
		s, ok := starts[w.name]
		if !ok {
			h.Missed++
			continue
		}
		q, ok := written[w.name]
		if ok {
			h.Reactions = append(h.Reactions, s.Sub(q.StageTimestamp))
			h.Received = append(h.Received, s.Sub(q.RequestReceived))
		}
		w.mu.Lock()
		if !w.readyAt.IsZero() {
			h.Decided = append(h.Decided, s.Sub(w.readyAt))
		}
		w.mu.Unlock()
	}
	if len(h.Reactions) < len(f.waiters)-h.Missed {
		return h, fmt.Errorf("the audit log has %d of the %d status writes", len(h.Reactions), len(f.waiters)-h.Missed)
	}
	d, rd, dd := durations(h.Reactions), durations(h.Received), durations(h.Decided)
	log("%s: herd written in %.2f s; from the PATCH's receipt p50 %s, p99 %s, max %s; from its completion p50 %s, p99 %s; from the waiter's decision p50 %s, p99 %s; %d missed",
		f.tool, h.Burst, fmtMS(rd.median()), fmtMS(rd.pct(99)), fmtMS(rd.max()), fmtMS(d.median()), fmtMS(d.pct(99)),
		fmtMS(dd.median()), fmtMS(dd.pct(99)), h.Missed)
	return h, nil
}

// queryPath is the path of an audited request, without its query.
func queryPath(r cluster.AuditEvent) string {
	p, _, _ := strings.Cut(r.RequestURI, "?")
	return p
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
