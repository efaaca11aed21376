package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"proa/e2e/cluster"
	"proa/e2e/harness"
)

// scaleOptions configure the scale run (-scale).
type scaleOptions struct {
	N         int           // Pods, and proa processes
	InformerN int           // informer waiters; 0: as many as N, memory permitting
	Idle      time.Duration // the idle window for CPU
	Width     int           // waiters between their start and their first wait, at most
	MemFloor  int64         // no informer waiter is started while MemAvailable is below this
	Tools     []string      // in this order
}

// toolResult is what one tool's fleet of waiters measured.
type toolResult struct {
	Tool        string `json:"tool"`
	Binary      string `json:"binary"`
	BinaryBytes int64  `json:"binary_bytes"`
	Requested   int    `json:"requested"`
	N           int    `json:"n"`
	Limit       string `json:"limit,omitempty"` // why N < Requested
	Width       int    `json:"launch_width"`

	StartSeconds float64 `json:"start_s"` // first start to last "waiting for sidecars"

	// The API server, from /proc/PID (VmRSS, CPU from schedstat) and
	// /metrics after a garbage collection (live heap + goroutine stacks).
	APIRSSBefore         int64   `json:"api_rss_before_bytes"`
	APIRSSWaiting        int64   `json:"api_rss_waiting_bytes"`
	APIHeapBefore        float64 `json:"api_heap_stacks_before_bytes"`
	APIHeapWaiting       float64 `json:"api_heap_stacks_waiting_bytes"`
	APIGoroutinesBefore  float64 `json:"api_goroutines_before"`
	APIGoroutinesWaiting float64 `json:"api_goroutines_waiting"`
	APIIdleRate          float64 `json:"api_idle_cpu_s_per_s"`  // before any waiter
	APICPUStart          float64 `json:"api_cpu_start_s"`       // to start the N waiters, idle rate removed
	APICPUIdle           float64 `json:"api_cpu_idle_window_s"` // in the idle window with N waiting
	EtcdCPUStart         float64 `json:"etcd_cpu_start_s"`
	EtcdCPUIdle          float64 `json:"etcd_cpu_idle_window_s"`
	IdleWindow           float64 `json:"idle_window_s"`

	// The waiters, from /proc/PID.
	ClientRSS      []int64         `json:"-"`
	ClientAnon     []int64         `json:"-"`
	ClientPSS      int64           `json:"client_pss_total_bytes"`
	ClientCPUStart []time.Duration `json:"-"` // each one's CPU from its exec to the end of the settling time
	ClientCPUIdle  time.Duration   `json:"-"` // all of them, in the idle window

	StartRequests     map[string]int `json:"start_requests"`      // by verb, from the first start to the idle window
	LifecycleRequests map[string]int `json:"lifecycle_requests"`  // by verb, the whole run
	FaultFree         map[string]int `json:"fault_free_requests"` // by verb, the whole run less the restart's window
	Restart           restartScale   `json:"restart"`
	Herd              herdScale      `json:"herd"`
	ExitCodes         map[int]int    `json:"exit_codes"`
}

// restartScale is what a kube-apiserver restart under N watchers cost.
type restartScale struct {
	StopBegan time.Time `json:"stop_began"` // SIGTERM: t = 0
	Stopped   time.Time `json:"stopped"`    // the old server exited
	Ready     time.Time `json:"ready"`      // the new one answered /readyz
	// Requests per second from t = 0 (reconnects: watches, lists, gets).
	Bins      []int          `json:"requests_per_second"`
	Counts    map[string]int `json:"requests"` // by verb (and answer, if not 200) from t = 0 until all were back
	Resumed   int            `json:"watches_resumed"`
	Fresh     int            `json:"watches_fresh"` // without a resourceVersion (or "0")
	Expired   int            `json:"expired_410"`   // 410 Expired on a watch, from the waiters' logs
	Failed    int            `json:"failed_attempts_logged"`
	Back      []float64      `json:"-"`        // each waiter's open watch: arrival after Ready, s
	NotBack   int            `json:"not_back"` // waiters without an open watch 3 minutes after the restart
	Exited    int            `json:"exited"`   // waiters that exited meanwhile
	SettledAt time.Time      `json:"settled"`
}

// herdScale is the burst of ready statuses.
type herdScale struct {
	Writes    int             `json:"writes"`
	Burst     float64         `json:"burst_s"` // first PATCH sent to last answered
	Reactions []time.Duration `json:"-"`       // ready PATCH completed (audit log) -> command started
	Received  []time.Duration `json:"-"`       // ready PATCH received by the API server (audit log) -> command started
	Decided   []time.Duration `json:"-"`       // the waiter's own "sidecars ready" log time -> command started
	Missed    int             `json:"missed"`  // commands not started within a minute
}

// runScale runs every tool's fleet, one after the other, on one control
// plane.
func runScale(ctx context.Context, env *harness.Env, o scaleOptions, bins binaries, waiter string, log func(string, ...any)) ([]*toolResult, error) {
	var out []*toolResult
	for _, tool := range o.Tools {
		exe, n := bins.Proa, o.N
		if p := os.Getenv("PROA_E2E_PROA"); p != "" && tool == "proa" {
			exe = p
		}
		if tool == "informer" {
			exe = waiter
			if o.InformerN > 0 {
				n = min(n, o.InformerN)
			}
		}
		r, err := runFleet(ctx, env, tool, exe, bins.Stamp, n, o, log)
		if r != nil {
			out = append(out, r)
		}
		if err != nil {
			return out, fmt.Errorf("%s: %w", tool, err)
		}
	}
	return out, nil
}

// runFleet measures n waiters of one tool: start, memory, idle CPU, an API
// server restart, a herd of ready statuses, and the end of every lifecycle.
func runFleet(ctx context.Context, env *harness.Env, tool, exe, stamp string, n int, o scaleOptions, log func(string, ...any)) (*toolResult, error) {
	c := env.Cluster
	res := &toolResult{Tool: tool, Binary: exe, BinaryBytes: fileSize(exe), Requested: n, Width: o.Width, ExitCodes: map[int]int{}}
	f := &fleet{tool: tool, ns: "scale-" + tool, exe: exe, stamp: stamp, cl: c,
		dir: filepath.Join(env.Dir, "scale", tool)}
	f.events = filepath.Join(f.dir, "events.jsonl")
	if err := os.MkdirAll(f.dir, 0o755); err != nil {
		return nil, err
	}
	if tool == "proa" {
		stopQuit, err := f.serveQuit(ctx)
		if err != nil {
			return nil, err
		}
		defer stopQuit()
	}
	defer f.stop()
	log("%s: creating %d Pods with their tokens", tool, n)
	if err := f.createPods(ctx, n, log); err != nil {
		return nil, err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := f.deletePods(dctx); err != nil {
			log("%s: deleting the Pods: %v", tool, err)
		}
	}()

	// A fresh API server, so that memory is measured from a clean start.
	log("%s: restarting kube-apiserver for a clean start", tool)
	if err := c.RestartAPIServer(ctx); err != nil {
		return nil, err
	}
	time.Sleep(5 * time.Second)
	api0, err := sampleProc(c.APIServerPID())
	if err != nil {
		return nil, err
	}
	time.Sleep(5 * time.Second)
	api1, err := sampleProc(c.APIServerPID())
	if err != nil {
		return nil, err
	}
	res.APIIdleRate = (api1.OnCPU - api0.OnCPU).Seconds() / api1.At.Sub(api0.At).Seconds()
	heap0, err := afterGC(ctx, c, f.ns)
	if err != nil {
		return nil, err
	}
	res.APIHeapBefore, res.APIGoroutinesBefore = heap0.HeapLive+heap0.StackInuse, heap0.Goroutines
	apiBefore, err := sampleProc(c.APIServerPID())
	if err != nil {
		return nil, err
	}
	etcdBefore, _ := sampleProc(c.EtcdPID())
	res.APIRSSBefore = apiBefore.VmRSS
	audit := newAuditTail(c.AuditLog, cluster.ServiceAccountUser(f.ns, "proa"))

	log("%s: starting %d waiters, %d at a time", tool, n, o.Width)
	t0 := time.Now()
	enough := func(started int) string {
		if tool == "proa" {
			return ""
		}
		if m := memAvailable(); m < o.MemFloor {
			return fmt.Sprintf("memory: MemAvailable %s, under the %s floor, after %d informer waiters", fmtMiB(m), fmtMiB(o.MemFloor), started)
		}
		return ""
	}
	started, limit, err := f.launch(ctx, o.Width, enough, log)
	res.N, res.Limit = started, limit
	if err != nil {
		return res, err
	}
	var allWaiting time.Time
	for _, w := range f.waiters {
		w.mu.Lock()
		allWaiting = later(allWaiting, w.waitingAt)
		w.mu.Unlock()
	}
	res.StartSeconds = allWaiting.Sub(t0).Seconds()
	log("%s: %d waiting after %s%s; settling for 10 s", tool, started, fmtS(allWaiting.Sub(t0)), map[bool]string{true: " (" + limit + ")"}[limit != ""])
	time.Sleep(10 * time.Second)
	apiWaiting, err := sampleProc(c.APIServerPID())
	if err != nil {
		return res, err
	}
	etcdWaiting, _ := sampleProc(c.EtcdPID())
	res.APICPUStart = (apiWaiting.OnCPU - apiBefore.OnCPU).Seconds() - res.APIIdleRate*apiWaiting.At.Sub(apiBefore.At).Seconds()
	res.EtcdCPUStart = (etcdWaiting.OnCPU - etcdBefore.OnCPU).Seconds()
	res.APIRSSWaiting = apiWaiting.VmRSS
	for _, w := range f.waiters {
		s, err := sampleProc(w.pid)
		if err != nil {
			return res, fmt.Errorf("%s %s: %w", tool, w.name, err)
		}
		if w.exec, err = w.sa.ExecCPU(w.pid); err != nil {
			return res, fmt.Errorf("%s %s: %w", tool, w.name, err)
		}
		res.ClientRSS = append(res.ClientRSS, s.VmRSS)
		res.ClientAnon = append(res.ClientAnon, s.RssAnon)
		res.ClientPSS += pss(w.pid)
		res.ClientCPUStart = append(res.ClientCPUStart, max(0, s.OnCPU-w.exec.Thread))
	}
	heapW, err := afterGC(ctx, c, f.ns)
	if err != nil {
		return res, err
	}
	res.APIHeapWaiting, res.APIGoroutinesWaiting = heapW.HeapLive+heapW.StackInuse, heapW.Goroutines

	log("%s: idle window of %s with %d waiting", tool, o.Idle, started)
	cpuOf := func() (time.Duration, procSample, procSample, error) {
		var sum time.Duration
		for _, w := range f.waiters {
			s, err := sampleProc(w.pid)
			if err != nil {
				return 0, procSample{}, procSample{}, fmt.Errorf("%s %s: %w", tool, w.name, err)
			}
			sum += s.OnCPU
		}
		a, err := sampleProc(c.APIServerPID())
		if err != nil {
			return 0, a, a, err
		}
		e, _ := sampleProc(c.EtcdPID())
		return sum, a, e, nil
	}
	cl0, a0, e0, err := cpuOf()
	if err != nil {
		return res, err
	}
	if err := sleepCtx(ctx, o.Idle); err != nil {
		return res, err
	}
	cl1, a1, e1, err := cpuOf()
	if err != nil {
		return res, err
	}
	res.ClientCPUIdle = cl1 - cl0
	res.APICPUIdle = (a1.OnCPU - a0.OnCPU).Seconds()
	res.EtcdCPUIdle = (e1.OnCPU - e0.OnCPU).Seconds()
	res.IdleWindow = a1.At.Sub(a0.At).Seconds()
	if reqs, err := audit.read(); err == nil {
		res.StartRequests = verbCounts(between(reqs, t0, a1.At))
	}

	if res.Restart, err = f.restart(ctx, audit, log); err != nil {
		return res, err
	}
	if res.Herd, err = f.herd(ctx, log); err != nil {
		return res, err
	}
	log("%s: waiting for every waiter to finish", tool)
	deadline := time.After(2 * time.Minute)
	for _, w := range f.waiters {
		select {
		case <-w.done:
		case <-deadline:
		case <-ctx.Done():
			return res, ctx.Err()
		}
	}
	for _, w := range f.waiters {
		w.mu.Lock()
		res.ExitCodes[w.exitCode]++
		w.mu.Unlock()
	}
	time.Sleep(time.Second) // the last watches' audit records
	reqs, err := audit.read()
	if err != nil {
		return res, err
	}
	res.LifecycleRequests = verbCounts(reqs)
	res.FaultFree = verbCounts(append(between(reqs, time.Time{}, res.Restart.StopBegan), between(reqs, res.Restart.SettledAt, time.Now())...))
	return res, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
