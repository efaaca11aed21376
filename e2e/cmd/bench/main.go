// Command bench measures what proa costs, against a real kube-apiserver and
// etcd on loopback (the e2e harness), and prints a table of the figures with
// their targets (issue 6):
//
//	cd e2e && go run ./cmd/bench            # the full run, about 2-3 minutes
//	cd e2e && go run ./cmd/bench -quick     # fewer runs, under 2 minutes
//	cd e2e && go run ./cmd/bench -json      # the same figures as JSON on stdout
//
// The parts (select some with -only):
//
//   - size: proa built as it ships (CGO_ENABLED=0 go build -trimpath
//     -ldflags='-s -w'), against ./baseline, a standard-library program
//     that does only TLS + HTTP + JSON + exec, built the same way; and where
//     the difference goes, by package (go tool nm -size);
//   - idle: peak resident memory (VmHWM) of proa 10 s into a wait for a
//     sidecar that never becomes ready, and the CPU time it used in the
//     first 60 s of that wait;
//   - lifecycle: whole Pod lifecycles, one after another: reaction latency
//     (the kubelet's PATCH that makes the sidecar ready completed -> the
//     command's first action, ./stamp writing the time), shutdown latency
//     (the command exited -> the sidecar received proa's shutdown request;
//     the sidecar's terminated status written -> proa exited), and the API
//     requests of each lifecycle from the audit log;
//   - restart: the API requests of several waiting proa across a
//     kube-apiserver restart, and when each watched again;
//   - server: what open watches cost the API server (memory, goroutines, CPU
//     to open), from its /metrics, with one connection and token per watch;
//   - model: a model of many proa reconnecting after an outage, with proa's
//     retry timing (no cluster needed).
//
// With -scale it runs the scale benchmark instead (make bench-scale,
// docs/performance.md): N Pods with N proa waiting at once, then N client-go
// informer waiters, each in its own mount and UTS namespaces with its own
// bound token: API-server memory and CPU per waiting Pod, client memory and
// CPU, requests by verb, a herd of ready statuses and an API-server restart,
// side by side with ratios (-scale-out DIR also writes JSON and an SVG plot).
//
// The runtime figures are for the binary as shipped (stripped), unless
// PROA_E2E_PROA names another. Like the e2e suite it needs root (proa runs
// in private mount and UTS namespaces) and builds kube-apiserver and etcd on
// first use. It exits 1 when a part could not run; a missed target does not
// change the exit code (see the result column, or "result" in -json).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"proa/e2e/harness"
	"proa/e2e/kubelet"
)

// Targets from issues 6 and 13.
const (
	sizeLimit      = 6246562 // scuttle (kvij d17ea9c), the smallest peer, built with the Go defaults: 5.96 MiB
	sizeRatioLimit = 1.10
	rssLimit       = 12 << 20
	cpuLimit       = 50 * time.Millisecond
	reactionMedian = 10 * time.Millisecond
	reactionP95    = 50 * time.Millisecond
	shutdownMedian = 10 * time.Millisecond
	rssSampleAfter = 10 * time.Second
	cpuSampleAfter = 60 * time.Second
)

// row is one line of the table.
type row struct {
	Figure  string             `json:"figure"`
	Value   string             `json:"value"`
	Target  string             `json:"target"`
	Result  string             `json:"result"` // PASS, MISS, or "" for information
	Numbers map[string]float64 `json:"numbers,omitempty"`
}

type report struct {
	Machine machine        `json:"machine"`
	Runs    map[string]int `json:"runs"`
	Rows    []row          `json:"rows"`
	Details []string       `json:"details"`
	Sizes   []pkgSize      `json:"package_sizes,omitempty"`
	Groups  []pkgSize      `json:"size_groups,omitempty"`
	Flags   []sizeVariant  `json:"size_variants,omitempty"`
	Model   []herd         `json:"reconnect_model,omitempty"`
	Started time.Time      `json:"started"`
	Took    string         `json:"took"`
	Errors  []string       `json:"errors,omitempty"`
}

func passIf(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

func main() {
	kubelet.RunRoleIfRequested()
	os.Exit(run())
}

func run() int {
	quick := flag.Bool("quick", false, "fewer runs (3 idle proa, 10 lifecycles, 5 Pods across the restart, 200 watches)")
	asJSON := flag.Bool("json", false, "print the results as JSON on stdout (progress goes to stderr)")
	idleN := flag.Int("idle", 5, "proa processes sampled for memory and CPU")
	lifeN := flag.Int("lifecycles", 30, "whole lifecycles for latencies and request counts")
	restartN := flag.Int("restart-pods", 10, "Pods waiting across the kube-apiserver restart")
	watchN := flag.Int("watches", 1000, "watches opened to measure the API server's cost per watch (0: skip)")
	only := flag.String("only", "", "run only these parts, comma-separated: size,idle,lifecycle,restart,server,model")
	modelN := flag.Int("model-pods", 10000, "Pods in the reconnect model (model part)")
	verbose := flag.Bool("v", false, "more details (every Pod's requests and logs across the restart)")
	keep := flag.Bool("keep", false, "keep the working directory (server logs, audit log, Pod files)")
	scale := flag.Bool("scale", false, "the scale run instead: N Pods with N proa at once, against N client-go informer waiters (see -scale-*)")
	var so scaleOptions
	flag.IntVar(&so.N, "scale-pods", 1000, "scale run: Pods, and waiters of each tool at once")
	flag.IntVar(&so.InformerN, "scale-informers", 0, "scale run: at most this many informer waiters (0: as many as -scale-pods, memory permitting)")
	flag.DurationVar(&so.Idle, "scale-idle", time.Minute, "scale run: the idle window in which CPU is measured")
	flag.IntVar(&so.Width, "scale-width", 16, "scale run: waiters started but not yet waiting, at most")
	memFloor := flag.Int("scale-mem-floor", 6144, "scale run: MiB of MemAvailable below which no more informer waiters are started")
	tools := flag.String("scale-tools", "proa,informer", "scale run: the tools, in order")
	scaleOut := flag.String("scale-out", "", "scale run: also write scale.json, scale.md and reconnects.svg into this directory")
	flag.Parse()
	if *scale {
		so.MemFloor = int64(*memFloor) << 20
		so.Tools = strings.Split(*tools, ",")
		return runScaleMode(so, *scaleOut, *keep)
	}
	if *quick {
		*idleN, *lifeN, *restartN, *watchN = 3, 10, 5, 200
	}
	want := func(part string) bool {
		return *only == "" || strings.Contains(","+*only+",", ","+part+",")
	}
	progress := io.Writer(os.Stderr)
	logf := func(format string, a ...any) {
		fmt.Fprintf(progress, "bench: "+format+"\n", a...)
	}

	needCluster := want("idle") || want("lifecycle") || want("restart") || (want("server") && *watchN > 0)
	if needCluster && os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench: proa runs in its own mount and UTS namespaces, as in a Pod: run the benchmark as root (sudo -E go run ./cmd/bench).")
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Minute)
	defer cancel()

	rep := &report{Machine: machineInfo(), Started: time.Now(), Runs: map[string]int{}}
	fail := func(part string, err error) {
		logf("%s: %v", part, err)
		rep.Errors = append(rep.Errors, part+": "+err.Error())
	}
	detail := func(format string, a ...any) { rep.Details = append(rep.Details, fmt.Sprintf(format, a...)) }

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
	var bins binaries
	if want("size") || needCluster {
		logf("building proa (as shipped and unstripped), the baseline and the stamp command")
		if bins, err = build(repo, filepath.Join(repo, "e2e"), work); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 1
		}
	}

	if want("size") {
		logf("size: building proa and the baseline with other flags")
		variants, err := buildVariants(repo, filepath.Join(repo, "e2e"), work)
		if err != nil {
			fail("size", err)
		}
		sizeRows(rep, bins, variants, detail, fail)
	}

	var openCPU time.Duration // measured by the server part, for the model
	if needCluster {
		// The runtime figures are for the binary as shipped, unless the
		// caller chose one.
		if os.Getenv("PROA_E2E_PROA") == "" {
			os.Setenv("PROA_E2E_PROA", bins.Proa)
		} else {
			detail("runtime figures measured with PROA_E2E_PROA=%s", os.Getenv("PROA_E2E_PROA"))
		}
		logf("starting the control plane")
		env, err := harness.Setup(ctx, harness.Options{Log: progress, Keep: *keep, ProaRequired: true})
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 1
		}
		defer env.Close()
		if want("idle") {
			logf("idle: %d proa waiting for a sidecar that is never ready, sampled at %s and %s",
				*idleN, rssSampleAfter, cpuSampleAfter)
			rep.Runs["idle"] = *idleN
			if runs, err := runIdle(ctx, env, *idleN, bins.Stamp, rssSampleAfter, cpuSampleAfter); err != nil {
				fail("idle", err)
			} else {
				idleRows(rep, runs, detail)
			}
		}
		if want("lifecycle") {
			logf("lifecycle: %d Pods one after another", *lifeN)
			rep.Runs["lifecycle"] = *lifeN
			var ls []lifecycle
			for i := range *lifeN {
				l, err := runLifecycle(ctx, env, fmt.Sprintf("life-%02d", i+1), bins.Stamp)
				if err != nil {
					fail("lifecycle", err)
					break
				}
				ls = append(ls, l)
				logf("lifecycle %d/%d: reaction %s, exit -> shutdown request %s, terminated -> exit %s",
					i+1, *lifeN, fmtMS(l.Reaction), fmtMS(l.ToShutdownReq), fmtMS(l.ToExit))
			}
			if len(ls) > 0 {
				lifecycleRows(rep, ls, detail)
			}
		}
		if want("restart") {
			rep.Runs["restart_pods"] = *restartN
			if res, err := runRestart(ctx, env, *restartN, bins.Stamp, logf); err != nil {
				fail("restart", err)
			} else {
				restartRows(rep, res, *verbose, detail)
			}
		}
		if want("server") && *watchN > 0 {
			rep.Runs["watches"] = *watchN
			if res, err := runServerCost(ctx, env, *watchN, logf); err != nil {
				fail("server", err)
			} else {
				serverRows(rep, res, detail)
				openCPU = time.Duration(res.OpenCPU / float64(res.N) * 1e9)
			}
		}
	}
	if want("model") {
		rep.Model = modelDetails(*modelN, openCPU, detail)
	}
	rep.Took = time.Since(rep.Started).Round(time.Second).String()

	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(rep)
	} else {
		printReport(os.Stdout, rep)
	}
	if len(rep.Errors) > 0 {
		return 1
	}
	return 0
}

func printReport(w io.Writer, rep *report) {
	m := rep.Machine
	fmt.Fprintf(w, "\nproa cost benchmark, %s (took %s)\n", rep.Started.UTC().Format("2006-01-02 15:04 UTC"), rep.Took)
	virt := ""
	if m.Virtualized {
		virt = ", virtual machine"
	}
	fmt.Fprintf(w, "machine: %s, %d cores%s, %d MiB; Linux %s (%s); %s; kube-apiserver %s, etcd %s\n",
		m.CPU, m.Cores, virt, m.MemoryMiB, m.Kernel, m.OS, m.Go, m.APIServer, m.Etcd)
	var runs []string
	for _, k := range []string{"idle", "lifecycle", "restart_pods", "watches"} {
		if n, ok := rep.Runs[k]; ok {
			runs = append(runs, fmt.Sprintf("%s=%d", k, n))
		}
	}
	fmt.Fprintf(w, "runs: %s\n\n", strings.Join(runs, ", "))
	fmt.Fprintln(w, "| figure | measured | target | result |")
	fmt.Fprintln(w, "|---|---|---|---|")
	for _, r := range rep.Rows {
		res := r.Result
		if res == "" {
			res = "—"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", r.Figure, r.Value, r.Target, res)
	}
	if len(rep.Details) > 0 {
		fmt.Fprintln(w, "\nDetails:")
		for _, d := range rep.Details {
			fmt.Fprintln(w, "- "+strings.ReplaceAll(d, "\n", "\n  "))
		}
	}
	if len(rep.Errors) > 0 {
		fmt.Fprintln(w, "\nErrors:")
		for _, e := range rep.Errors {
			fmt.Fprintln(w, "- "+strings.ReplaceAll(e, "\n", "\n  "))
		}
	}
}
