package main

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"proa/e2e/cluster"
	"proa/e2e/harness"
	"proa/e2e/kubelet"
)

// benchPod is the Pod every measurement uses: container "main" runs proa
// (-p envoy's /quit, then the stamp command), container "envoy" is a
// sidecar that is not ready until the benchmark says so.
func benchPod(name, stamp string, extraArgs ...string) kubelet.PodSpec {
	args := append([]string{"-p", kubelet.URLOf("envoy", "/quit")}, extraArgs...)
	return kubelet.PodSpec{Name: name, Containers: []kubelet.Container{
		{Name: "main", Proa: &kubelet.Proa{Args: args, Command: []string{stamp}}},
		{Name: "envoy", Sidecar: &kubelet.Sidecar{NeverReady: true}},
	}}
}

// lifecycle is one measured run of a Pod from start to finish.
type lifecycle struct {
	Reaction      time.Duration // ready status written -> command started
	ToShutdownReq time.Duration // command exited -> sidecar received the shutdown request
	ToExit        time.Duration // sidecar terminated status written -> proa exited
	Requests      []cluster.AuditEvent
	ExitCode      int
}

// runLifecycle runs one Pod: proa waits for envoy, which the benchmark makes
// ready once proa's watch is open; proa runs stamp, which exits at once;
// proa POSTs envoy's /quit, waits until envoy shows terminated and exits.
func runLifecycle(ctx context.Context, env *harness.Env, name, stamp string) (lifecycle, error) {
	var l lifecycle
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	p, err := env.Kubelet.Run(ctx, benchPod(name, stamp))
	if err != nil {
		return l, err
	}
	defer p.Close()
	fail := func(err error) (lifecycle, error) {
		return l, fmt.Errorf("pod %s: %w\n%s", name, err, indent(kubelet.Timeline(p.Events(), p.Created)))
	}
	// "waiting for sidecars" comes once the Pod's first state arrived on the
	// watch: from then on proa only waits for changes.
	if _, err := p.WaitEvent(ctx, "proa", "waiting for sidecars"); err != nil {
		return fail(err)
	}
	time.Sleep(200 * time.Millisecond) // let proa settle into its idle wait
	if err := p.SetReady(ctx, "envoy", true); err != nil {
		return fail(err)
	}
	ready, err := p.WaitWrite(ctx, "envoy ready", kubelet.Ready("envoy"))
	if err != nil {
		return fail(err)
	}
	started, err := p.WaitEvent(ctx, "main/app", "started")
	if err != nil {
		return fail(err)
	}
	exiting, err := p.WaitEvent(ctx, "main/app", "exiting")
	if err != nil {
		return fail(err)
	}
	quit, err := p.WaitEvent(ctx, "envoy", "quit requested")
	if err != nil {
		return fail(err)
	}
	term, err := p.WaitWrite(ctx, "envoy terminated", kubelet.Terminated("envoy"))
	if err != nil {
		return fail(err)
	}
	ex, err := p.WaitProaExit(ctx)
	if err != nil {
		return fail(err)
	}
	l.ExitCode = ex.Code
	l.Reaction = started.Time.Sub(ready.Done)
	l.ToShutdownReq = quit.Time.Sub(exiting.Time)
	l.ToExit = ex.At.Sub(term.Done)
	if ex.Code != 0 {
		return fail(fmt.Errorf("proa exited with code %d, want 0", ex.Code))
	}
	// The watch's audit record is complete once the server saw the stream
	// end; give the log a moment.
	time.Sleep(100 * time.Millisecond)
	if l.Requests, err = env.Cluster.AuditRequests(cluster.ServiceAccountUser(p.Namespace, p.Spec.ServiceAccount)); err != nil {
		return fail(err)
	}
	return l, nil
}

// requestCounts counts a request list by verb ("watch", "list", "get", ...).
func requestCounts(reqs []cluster.AuditEvent) map[string]int {
	n := map[string]int{}
	for _, r := range reqs {
		n[r.Verb]++
	}
	return n
}

// queryOf returns the query parameters of an audited request.
func queryOf(r cluster.AuditEvent) url.Values {
	u, err := url.Parse(r.RequestURI)
	if err != nil {
		return url.Values{}
	}
	return u.Query()
}

// describeRequests lists requests one per line: time, verb, code, URI.
func describeRequests(reqs []cluster.AuditEvent, t0 time.Time) string {
	var b strings.Builder
	for _, r := range reqs {
		fmt.Fprintf(&b, "%+8.3fs %-6s %3d %s\n", r.RequestReceived.Sub(t0).Seconds(), r.Verb, r.ResponseStatus.Code, r.RequestURI)
	}
	return b.String()
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ")
}
