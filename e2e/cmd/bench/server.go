package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"proa/e2e/cluster"
	"proa/e2e/harness"
)

// serverMetrics are the API server's own figures, from its /metrics.
type serverMetrics struct {
	At         time.Time
	CPU        float64 // process_cpu_seconds_total
	RSS        float64 // process_resident_memory_bytes
	HeapLive   float64 // go_gc_heap_live_bytes: the heap the last GC found live
	StackInuse float64 // go_memstats_stack_inuse_bytes: goroutine stacks
	GCCycles   float64 // go_gc_cycles_total_gc_cycles_total
	Goroutines float64 // go_goroutines
	PodWatches float64 // apiserver_longrunning_requests for pods WATCH
}

func scrape(ctx context.Context, c *cluster.Cluster) (serverMetrics, error) {
	m := serverMetrics{At: time.Now()}
	var body []byte
	req, err := http.NewRequestWithContext(ctx, "GET", c.URL+"/metrics", nil)
	if err != nil {
		return m, err
	}
	req.Header.Set("Authorization", "Bearer "+c.AdminToken)
	resp, err := clientFor(c).Do(req)
	if err != nil {
		return m, err
	}
	defer resp.Body.Close()
	if body, err = io.ReadAll(resp.Body); err != nil {
		return m, err
	}
	if resp.StatusCode != 200 {
		return m, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		name, v := line[:i], line[i+1:]
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			continue
		}
		switch {
		case name == "process_cpu_seconds_total":
			m.CPU = f
		case name == "process_resident_memory_bytes":
			m.RSS = f
		case name == "go_gc_heap_live_bytes":
			m.HeapLive = f
		case name == "go_memstats_stack_inuse_bytes":
			m.StackInuse = f
		case name == "go_gc_cycles_total_gc_cycles_total":
			m.GCCycles = f
		case name == "go_goroutines":
			m.Goroutines = f
		case strings.HasPrefix(name, "apiserver_longrunning_requests{") &&
			strings.Contains(name, `resource="pods"`) && strings.Contains(name, `verb="WATCH"`):
			m.PodWatches += f
		}
	}
	return m, sc.Err()
}

var (
	adminClientMu sync.Mutex
	adminClient   *http.Client
)

func clientFor(c *cluster.Cluster) *http.Client {
	adminClientMu.Lock()
	defer adminClientMu.Unlock()
	if adminClient == nil {
		adminClient = &http.Client{Transport: newTransport(c)}
	}
	return adminClient
}

// newTransport is a transport of its own (so a connection of its own) that
// trusts the cluster's CA and speaks HTTP/2, as proa's does.
func newTransport(c *cluster.Cluster) *http.Transport {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.CAPEM)
	return &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2: true, ResponseHeaderTimeout: 30 * time.Second}
}

// serverCost is what n open Pod watches, each proa's request on a
// connection of its own with a token of its own, cost the API server.
type serverCost struct {
	N                 int
	Before, Open, End serverMetrics
	IdleCPURate       float64       // API server CPU seconds per second with nothing to do
	OpenTook          time.Duration // from the first request to the last first event
	OpenCPU           float64       // API server CPU seconds spent opening the n watches, idle rate removed
}

func (s serverCost) per(f func(serverMetrics) float64) float64 {
	return (f(s.Open) - f(s.Before)) / float64(s.N)
}

// runServerCost creates n Pods (never run) with a ServiceAccount that may
// get and watch them and one bound token per Pod, reads the API server's
// metrics, opens n watches exactly as proa does (one per Pod, each on its
// own TLS connection: 10,000 proa processes are 10,000 connections), reads
// the metrics again, and closes them.
func runServerCost(ctx context.Context, env *harness.Env, n int, log func(string, ...any)) (serverCost, error) {
	res := serverCost{N: n}
	c := env.Cluster
	ns, sa := "bench-watch-cost", "proa"
	if err := c.CreateNamespace(ctx, ns); err != nil && !cluster.IsCode(err, 409) {
		return res, err
	}
	if err := c.CreateServiceAccount(ctx, ns, sa); err != nil && !cluster.IsCode(err, 409) {
		return res, err
	}
	if err := c.GrantPods(ctx, ns, "proa", sa, []string{"get", "watch"}); err != nil && !cluster.IsCode(err, 409) {
		return res, err
	}
	names := make([]string, n)
	tokens := make([]string, n)
	log("creating %d Pods and %d bound tokens", n, n)
	err := parallel(n, 8, func(i int) error {
		names[i] = fmt.Sprintf("job-%05d", i)
		uid, err := c.CreatePod(ctx, ns, podManifest(ns, names[i]))
		if err != nil {
			return err
		}
		tokens[i], err = c.RequestToken(ctx, ns, sa, cluster.BoundObject{Kind: "Pod", Name: names[i], UID: uid})
		return err
	})
	if err != nil {
		return res, err
	}
	time.Sleep(2 * time.Second)
	idle0, err := scrape(ctx, c)
	if err != nil {
		return res, err
	}
	time.Sleep(5 * time.Second)
	idle1, err := scrape(ctx, c)
	if err != nil {
		return res, err
	}
	res.IdleCPURate = (idle1.CPU - idle0.CPU) / idle1.At.Sub(idle0.At).Seconds()
	if res.Before, err = afterGC(ctx, c, ns); err != nil {
		return res, err
	}

	log("opening %d watches, one connection and token each", n)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	var bodies []io.Closer
	var transports []*http.Transport
	defer func() {
		cancel()
		for _, b := range bodies {
			b.Close()
		}
		for _, t := range transports {
			t.CloseIdleConnections()
		}
	}()
	start := time.Now()
	err = parallel(n, 32, func(i int) error {
		t := newTransport(c)
		q := url.Values{"watch": {"1"}, "fieldSelector": {"metadata.name=" + names[i]},
			"allowWatchBookmarks": {"true"}, "timeoutSeconds": {"600"}}
		req, err := http.NewRequestWithContext(wctx, "GET", c.URL+"/api/v1/namespaces/"+ns+"/pods?"+q.Encode(), nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+tokens[i])
		req.Header.Set("Accept", "application/json")
		req.Header.Set("User-Agent", "proa-bench")
		resp, err := (&http.Client{Transport: t}).Do(req)
		if err != nil {
			return err
		}
		mu.Lock()
		bodies, transports = append(bodies, resp.Body), append(transports, t)
		mu.Unlock()
		if resp.StatusCode != 200 {
			return fmt.Errorf("watch %s: %s", names[i], resp.Status)
		}
		dec := json.NewDecoder(resp.Body)
		var ev struct{ Type string }
		if err := dec.Decode(&ev); err != nil {
			return fmt.Errorf("watch %s: %w", names[i], err)
		}
		if ev.Type != "ADDED" {
			return fmt.Errorf("watch %s: first event %s, want ADDED", names[i], ev.Type)
		}
		go io.Copy(io.Discard, resp.Body) // keep the stream flowing, as proa does
		return nil
	})
	if err != nil {
		return res, err
	}
	opened := time.Now()
	res.OpenTook = opened.Sub(start)
	afterOpen, err := scrape(ctx, c)
	if err != nil {
		return res, err
	}
	res.OpenCPU = afterOpen.CPU - res.Before.CPU - res.IdleCPURate*afterOpen.At.Sub(res.Before.At).Seconds()
	time.Sleep(3 * time.Second) // let the server settle with the watches open
	if res.Open, err = afterGC(ctx, c, ns); err != nil {
		return res, err
	}
	cancel()
	for _, b := range bodies {
		b.Close()
	}
	time.Sleep(time.Second) // the streams are reset; then the connections are idle
	for _, t := range transports {
		t.CloseIdleConnections()
	}
	bodies, transports = nil, nil
	time.Sleep(3 * time.Second)
	res.End, err = afterGC(ctx, c, ns)
	return res, err
}

// afterGC returns the API server's metrics after a garbage collection that
// started after the call: go_gc_heap_live_bytes is only updated by a GC, and
// an idle API server collects every 2 minutes. To get one sooner it makes
// the server allocate, listing the Pods of namespace ns as admin (not
// audited, not counted).
func afterGC(ctx context.Context, c *cluster.Cluster, ns string) (serverMetrics, error) {
	m0, err := scrape(ctx, c)
	if err != nil {
		return m0, err
	}
	for range 300 {
		if err := c.Do(ctx, "GET", "/api/v1/namespaces/"+ns+"/pods", nil, nil); err != nil {
			return m0, err
		}
		m, err := scrape(ctx, c)
		if err != nil || m.GCCycles > m0.GCCycles {
			return m, err
		}
	}
	return m0, fmt.Errorf("no garbage collection in the API server after 300 lists")
}

// podManifest is a Job-like Pod with an application and a sidecar
// container, bound to a node that does not exist (no one runs it).
func podManifest(ns, name string) cluster.Obj {
	return cluster.Obj{"apiVersion": "v1", "kind": "Pod",
		"metadata": cluster.Obj{"name": name, "namespace": ns, "labels": cluster.Obj{"app": "proa-bench"}},
		"spec": cluster.Obj{
			"nodeName": "bench-node", "serviceAccountName": "proa", "automountServiceAccountToken": false,
			"restartPolicy": "Never",
			"containers": []cluster.Obj{
				{"name": "main", "image": "proa-e2e/app:test", "command": []string{"/proa"},
					"args": []string{"-p", "http://127.0.0.1:15020/quitquitquit", "--", "/app/job"}},
				{"name": "envoy", "image": "proa-e2e/sidecar:test",
					"readinessProbe": cluster.Obj{"httpGet": cluster.Obj{"path": "/ready", "port": 15021}}},
			},
		}}
}

// parallel calls f(0..n-1) with at most width calls at a time and returns
// the first error.
func parallel(n, width int, f func(int) error) error {
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	sem := make(chan struct{}, width)
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := f(i); err != nil {
				once.Do(func() { first = err })
			}
		}()
	}
	wg.Wait()
	return first
}
