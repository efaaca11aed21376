package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"proa/e2e/harness"
	"proa/e2e/kubelet"
)

// idleRun is one proa that waits for a sidecar that never becomes ready:
// sampled Early after its start (memory, start-up CPU) and Late (CPU of the
// whole wait).
type idleRun struct {
	Early, Late procSample
	Exec        kubelet.ExecCPU // podinit's share of the counters, before it executed proa
}

// onCPU is proa's own CPU time from schedstat (exact) when s was taken.
func (r idleRun) onCPU(s procSample) time.Duration { return max(0, s.OnCPU-r.Exec.Thread) }

// runIdle starts n Pods whose sidecar is never ready, samples each proa
// early and late after its start, then kills them. The Pods run side by
// side: an idle wait costs no CPU to speak of, and each figure is per
// process.
func runIdle(ctx context.Context, env *harness.Env, n int, stamp string, early, late time.Duration) ([]idleRun, error) {
	pods := make([]*kubelet.Pod, 0, n)
	defer func() {
		for _, p := range pods {
			p.Close()
		}
	}()
	for i := range n {
		p, err := env.Kubelet.Run(ctx, benchPod(fmt.Sprintf("idle-%02d", i+1), stamp))
		if err != nil {
			return nil, err
		}
		pods = append(pods, p)
	}
	runs := make([]idleRun, n)
	pids := make([]int, n)
	starts := make([]time.Time, n)
	for i, p := range pods {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := p.WaitEvent(wctx, "proa", "waiting for sidecars")
		cancel()
		if err != nil {
			return nil, fmt.Errorf("pod %s: %w\n%s", p.Name, err, indent(kubelet.Timeline(p.Events(), p.Created)))
		}
		pids[i], starts[i] = p.PID("main"), p.Started("main")
		if pids[i] == 0 {
			return nil, fmt.Errorf("pod %s: proa is not running", p.Name)
		}
		if runs[i].Exec, err = p.ExecCPU(pids[i]); err != nil {
			return nil, fmt.Errorf("pod %s: podinit's CPU time before it executed proa: %w", p.Name, err)
		}
	}
	sampleAll := func(after time.Duration, set func(*idleRun, procSample)) error {
		for i := range pods {
			if err := sleepUntil(ctx, starts[i].Add(after)); err != nil {
				return err
			}
			s, err := sampleProc(pids[i])
			if err != nil {
				return fmt.Errorf("pod %s: reading proa's /proc: %w", pods[i].Name, err)
			}
			if filepath.Base(s.ExecPath) != "proa" {
				return fmt.Errorf("pod %s: PID %d runs %s, not proa", pods[i].Name, pids[i], s.ExecPath)
			}
			set(&runs[i], s)
		}
		return nil
	}
	if err := sampleAll(early, func(r *idleRun, s procSample) { r.Early = s }); err != nil {
		return nil, err
	}
	if err := sampleAll(late, func(r *idleRun, s procSample) { r.Late = s }); err != nil {
		return nil, err
	}
	for _, p := range pods {
		if _, ok := p.FindEvent("main/app", "started"); ok {
			return nil, fmt.Errorf("pod %s: the command ran although the sidecar was never ready", p.Name)
		}
	}
	return runs, nil
}

func sleepUntil(ctx context.Context, t time.Time) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Until(t)):
		return nil
	}
}
