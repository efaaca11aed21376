package main

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"proa/e2e/cluster"
	"proa/e2e/harness"
)

// runScaleMode is the benchmark with -scale.
func runScaleMode(o scaleOptions, out string, keep bool) int {
	logf := func(format string, a ...any) { fmt.Fprintf(os.Stderr, "bench: "+format+"\n", a...) }
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench: the waiters run in their own mount and UTS namespaces, as in a Pod: run the benchmark as root.")
		return 1
	}
	for _, t := range o.Tools {
		if t != "proa" && t != "informer" {
			fmt.Fprintf(os.Stderr, "bench: -scale-tools: unknown tool %q (proa, informer)\n", t)
			return 2
		}
	}
	if o.N < 1 || o.Width < 1 {
		fmt.Fprintln(os.Stderr, "bench: -scale-pods and -scale-width must be at least 1")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 90*time.Minute)
	defer cancel()
	rep := &scaleReport{Machine: machineInfo(), Started: time.Now(), Requests: o.N, Idle: o.Idle.Seconds(),
		Summary: map[string]map[string]float64{}}
	repo, err := harness.RepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	work, err := os.MkdirTemp("", "proa-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	defer os.RemoveAll(work)
	logf("building proa (as shipped) and the stamp command")
	bins, err := build(repo, filepath.Join(repo, "e2e"), work)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	var waiter string
	if slices.Contains(o.Tools, "informer") {
		if waiter, err = cluster.EnsureWaiter(ctx, cluster.CacheDir(), os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 1
		}
	}
	os.Setenv("PROA_E2E_PROA", cmp.Or(os.Getenv("PROA_E2E_PROA"), bins.Proa))
	logf("starting the control plane")
	env, err := harness.Setup(ctx, harness.Options{Log: os.Stderr, Keep: keep, ProaRequired: true, AuditStatusWrites: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	defer env.Close()
	results, err := runScale(ctx, env, o, bins, waiter, logf)
	if err != nil {
		rep.Errors = append(rep.Errors, err.Error())
	}
	rep.Tools = results
	rep.Rows = scaleRows(findTool(results, "proa"), findTool(results, "informer"))
	dropNaN(rep.Rows)
	rep.Notes = scaleNotes(results)
	for _, r := range results {
		if r.N > 0 {
			rep.Summary[r.Tool] = summarize(r).numbers()
		}
	}
	rep.Took = time.Since(rep.Started).Round(time.Second).String()
	printScale(os.Stdout, rep)
	if out != "" {
		if err := writeScale(out, rep); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 1
		}
		logf("wrote %s", strings.Join([]string{filepath.Join(out, "scale.md"), filepath.Join(out, "scale.json"), filepath.Join(out, "reconnects.svg")}, ", "))
	}
	if len(rep.Errors) > 0 {
		return 1
	}
	return 0
}
