package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"proa/e2e/cluster"
	"proa/e2e/kubelet"
	"proa/e2e/proc"
)

// A fleet is the scale run's N Pods of one tool: for each, a Pod object whose
// status the benchmark writes (container "main" running and ready, sidecar
// "envoy" running and not ready), a token bound to it, and one waiting
// process (proa, or the informer waiter) in its own mount and UTS namespaces
// (kubelet.Standalone). There is no sidecar process: its readiness and
// termination are status writes.
type fleet struct {
	tool    string // "proa" or "informer"
	ns      string
	exe     string // the waiter's binary
	stamp   string // the command it runs
	dir     string
	events  string // the stamp's events file, shared by every Pod
	cl      *cluster.Cluster
	quitURL string // proa's -p base URL (proa only)

	waiters []*waiter

	mu    sync.Mutex
	quits map[string]time.Time // shutdown requests received, by Pod (proa only)
}

// waiter is one Pod and its waiting process.
type waiter struct {
	name, uid, token string
	sa               kubelet.Standalone
	pid              int
	started          time.Time
	exec             kubelet.ExecCPU
	waiting          chan struct{} // closed at its first "waiting for sidecars"
	done             chan struct{} // closed once it exited

	mu        sync.Mutex
	waitingAt time.Time
	readyAt   time.Time   // its "sidecars ready" line arrived
	expired   []time.Time // 410 Expired seen on a watch, from its log
	failed    []time.Time // failed watch attempts, from its log (proa)
	exitCode  int
	exitedAt  time.Time
	tail      []string // its last output lines, for errors
}

func (w *waiter) logLine(line string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.tail = append(w.tail, line); len(w.tail) > 20 {
		w.tail = w.tail[1:]
	}
	if !strings.HasPrefix(line, "{") {
		return // client-go's klog lines
	}
	var l struct {
		Time time.Time `json:"time"`
		Msg  string    `json:"msg"`
		Err  string    `json:"err"`
		Code int       `json:"code"`
	}
	if json.Unmarshal([]byte(line), &l) != nil {
		return
	}
	now := time.Now()
	switch {
	case l.Msg == "waiting for sidecars" && w.waitingAt.IsZero():
		w.waitingAt = now
		close(w.waiting)
	case l.Msg == "sidecars ready" && w.readyAt.IsZero():
		w.readyAt = l.Time
	case l.Msg == "watch failed, retrying": // proa
		w.failed = append(w.failed, now)
		if strings.HasPrefix(l.Err, "410 ") {
			w.expired = append(w.expired, now)
		}
	case l.Msg == "watch error event" && l.Code == http.StatusGone: // informer waiter
		w.expired = append(w.expired, now)
	}
}

func (w *waiter) exited() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

func (w *waiter) lastLines() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.tail, "\n")
}

// podObject is a Job-like Pod with the waiter's container "main" and a
// sidecar "envoy", bound to a node that does not exist.
func podObject(ns, name string) cluster.Obj {
	return podManifest(ns, name)
}

// podStatus is the status the benchmark writes, as the kubelet would: main
// runs and is ready; envoy is "running" (not ready), "ready" or
// "terminated" (exit 0).
func podStatus(envoy string) cluster.Obj {
	now := time.Now().UTC().Format(time.RFC3339)
	running := cluster.Obj{"running": cluster.Obj{"startedAt": now}}
	cs := func(name, image string, ready bool, state cluster.Obj) cluster.Obj {
		return cluster.Obj{"name": name, "image": image, "imageID": "docker.io/" + image + "@sha256:" + strings.Repeat("0", 64),
			"containerID": "containerd://" + strings.Repeat("1", 64), "ready": ready, "restartCount": 0,
			"started": state["running"] != nil, "state": state}
	}
	envoyState := running
	switch envoy {
	case "terminated":
		envoyState = cluster.Obj{"terminated": cluster.Obj{"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}}
	}
	ready := envoy == "ready"
	cond := func(typ string, ok bool) cluster.Obj {
		s := "False"
		if ok {
			s = "True"
		}
		return cluster.Obj{"type": typ, "status": s, "lastProbeTime": nil, "lastTransitionTime": now}
	}
	return cluster.Obj{"phase": "Running", "hostIP": "127.0.0.1", "podIP": "127.0.0.1", "qosClass": "BestEffort",
		"startTime": now,
		"conditions": []cluster.Obj{cond("Initialized", true), cond("Ready", ready), cond("ContainersReady", ready),
			cond("PodScheduled", true)},
		"containerStatuses": []cluster.Obj{
			cs("main", "proa-e2e/app:test", true, running),
			cs("envoy", "proa-e2e/sidecar:test", ready, envoyState),
		}}
}

// createPods creates the namespace, its ServiceAccount "proa" with a Role on
// pods (get, list, watch: what both tools need), and n Pods, each with its
// initial status and a token bound to it (a TokenRequest, as the kubelet
// makes for a projected token).
func (f *fleet) createPods(ctx context.Context, n int, log func(string, ...any)) error {
	c := f.cl
	if err := c.CreateNamespace(ctx, f.ns); err != nil && !cluster.IsCode(err, 409) {
		return err
	}
	if err := c.CreateServiceAccount(ctx, f.ns, "proa"); err != nil && !cluster.IsCode(err, 409) {
		return err
	}
	if err := c.GrantPods(ctx, f.ns, "pod-reader", "proa", []string{"get", "list", "watch"}); err != nil && !cluster.IsCode(err, 409) {
		return err
	}
	f.waiters = make([]*waiter, n)
	var made atomic.Int64
	start := time.Now()
	err := parallel(n, 16, func(i int) error {
		w := &waiter{name: fmt.Sprintf("%s-%04d", f.tool, i), waiting: make(chan struct{}), done: make(chan struct{}), exitCode: -1}
		f.waiters[i] = w
		var err error
		if w.uid, err = c.CreatePod(ctx, f.ns, podObject(f.ns, w.name)); err != nil {
			return fmt.Errorf("creating pod %s: %w", w.name, err)
		}
		if err := c.PatchPodStatus(ctx, f.ns, w.name, podStatus("running")); err != nil {
			return fmt.Errorf("pod %s status: %w", w.name, err)
		}
		if w.token, err = c.RequestToken(ctx, f.ns, "proa", cluster.BoundObject{Kind: "Pod", Name: w.name, UID: w.uid}); err != nil {
			return fmt.Errorf("pod %s token: %w", w.name, err)
		}
		if k := made.Add(1); k%250 == 0 {
			log("%s: %d of %d Pods created (%s)", f.tool, k, n, fmtS(time.Since(start)))
		}
		return nil
	})
	return err
}

// argv is the waiter's command line for Pod w.
func (f *fleet) argv(w *waiter) []string {
	hold := herdHold.String()
	if f.tool == "proa" {
		return []string{"/proa", "-p", f.quitURL + "/" + w.name, "--", f.stamp, hold}
	}
	return []string{"/informer-waiter", "--sidecar", "envoy", "--", f.stamp, hold}
}

// launch starts the waiters, at most width of them at a time between their
// start and their first "waiting for sidecars"; it stops early when
// enough() says so (for memory) and returns how many run.
func (f *fleet) launch(ctx context.Context, width int, enough func(started int) string, log func(string, ...any)) (int, string, error) {
	sem := make(chan struct{}, width)
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	started, limit := 0, ""
	t0 := time.Now()
	for i, w := range f.waiters {
		select {
		case sem <- struct{}{}:
		case err := <-errc:
			wg.Wait()
			return started, limit, err
		case <-ctx.Done():
			wg.Wait()
			return started, limit, ctx.Err()
		}
		if limit = enough(i); limit != "" {
			<-sem
			break
		}
		if err := f.start(w); err != nil {
			<-sem
			wg.Wait()
			return started, limit, err
		}
		started++
		if started%250 == 0 {
			log("%s: %d waiters started (%s)", f.tool, started, fmtS(time.Since(t0)))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			select {
			case <-w.waiting:
			case <-w.done:
				select {
				case errc <- fmt.Errorf("%s %s exited with code %d before it waited:\n%s", f.tool, w.name, w.exitCode, indent(w.lastLines())):
				default:
				}
			case <-time.After(2 * time.Minute):
				select {
				case errc <- fmt.Errorf("%s %s: not waiting for sidecars 2 minutes after its start:\n%s", f.tool, w.name, indent(w.lastLines())):
				default:
				}
			case <-ctx.Done():
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errc:
		return started, limit, err
	default:
	}
	f.waiters = f.waiters[:started]
	return started, limit, ctx.Err()
}

// start starts w's process; its log is read, and its exit recorded, in the
// background.
func (f *fleet) start(w *waiter) error {
	w.sa = kubelet.Standalone{Dir: filepath.Join(f.dir, w.name), Namespace: f.ns, PodName: w.name, PodUID: w.uid,
		Container: "main", Token: w.token, CAPEM: f.cl.CAPEM, APIHost: f.cl.Host, APIPort: f.cl.Port,
		Exe: f.exe, Argv: f.argv(w),
		Env: []string{"PROA_E2E_EVENTS=" + f.events, "PROA_E2E_CONTAINER=" + w.name}}
	cmd, err := w.sa.Command()
	if err != nil {
		return err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := proc.Start(cmd); err != nil {
		return fmt.Errorf("starting %s for %s: %w", f.tool, w.name, err)
	}
	w.pid, w.started = cmd.Process.Pid, time.Now()
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 0, 4096), 1<<20)
		for sc.Scan() {
			w.logLine(sc.Text())
		}
		err := cmd.Wait()
		w.mu.Lock()
		w.exitCode, w.exitedAt = proc.ExitCode(cmd.ProcessState), time.Now()
		if err != nil && cmd.ProcessState == nil {
			w.tail = append(w.tail, "wait: "+err.Error())
		}
		w.mu.Unlock()
		close(w.done)
	}()
	return nil
}

// stop kills the waiters still running (by the PIDs this run started) and
// waits for them.
func (f *fleet) stop() {
	for _, w := range f.waiters {
		if w != nil && w.pid != 0 && !w.exited() {
			if p, err := os.FindProcess(w.pid); err == nil {
				p.Kill()
			}
		}
	}
	for _, w := range f.waiters {
		if w != nil && w.pid != 0 {
			select {
			case <-w.done:
			case <-time.After(10 * time.Second):
			}
		}
	}
}

// serveQuit answers proa's shutdown requests (POST QUITURL/POD) as the
// sidecar would, and writes the sidecar's terminated status as the kubelet
// would once it exited.
func (f *fleet) serveQuit(ctx context.Context) (stop func(), err error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f.quits = map[string]time.Time{}
	f.quitURL = "http://" + l.Addr().String() + "/quit"
	srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		name, ok := strings.CutPrefix(r.URL.Path, "/quit/")
		if !ok {
			http.NotFound(rw, r)
			return
		}
		f.mu.Lock()
		_, again := f.quits[name]
		if !again {
			f.quits[name] = time.Now()
		}
		f.mu.Unlock()
		rw.WriteHeader(http.StatusOK)
		if !again {
			go func() {
				pctx, cancel := context.WithTimeout(ctx, time.Minute)
				defer cancel()
				for pctx.Err() == nil {
					if f.cl.PatchPodStatus(pctx, f.ns, name, podStatus("terminated")) == nil {
						return
					}
					time.Sleep(200 * time.Millisecond)
				}
			}()
		}
	})}
	go srv.Serve(l)
	return func() { srv.Close() }, nil
}

// deletePods removes the fleet's Pods at once (no kubelet would confirm a
// graceful deletion), so the next fleet runs against the same number of
// objects.
func (f *fleet) deletePods(ctx context.Context) error {
	return f.cl.Do(ctx, "DELETE", "/api/v1/namespaces/"+f.ns+"/pods?gracePeriodSeconds=0", nil, nil)
}

// stampStarts reads the stamp command's "started" events, by Pod.
func stampStarts(path string) (map[string]time.Time, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]time.Time{}, nil
	} else if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]time.Time{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var ev struct {
			T   time.Time `json:"t"`
			Src string    `json:"src"`
			Msg string    `json:"msg"`
		}
		if json.Unmarshal(sc.Bytes(), &ev) != nil || ev.Msg != "started" {
			continue
		}
		if name, ok := strings.CutSuffix(ev.Src, "/app"); ok {
			if _, seen := out[name]; !seen {
				out[name] = ev.T
			}
		}
	}
	return out, sc.Err()
}

// memAvailable is MemAvailable from /proc/meminfo, in bytes.
func memAvailable() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemAvailable:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// pss is the process's proportional set size (its shared pages divided
// among the processes sharing them), from /proc/PID/smaps_rollup.
func pss(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "Pss:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}
