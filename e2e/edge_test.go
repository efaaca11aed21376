package e2e

import (
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"proa/e2e/cluster"
	"proa/e2e/kubelet"
)

// Edge cases of issue 11 on a real kube-apiserver: servers configured
// unlike the shared one (a second control plane, with extra flags), and
// credentials that stop working.

// secondCluster starts another etcd + kube-apiserver with extra flags for
// kube-apiserver, and a kubelet for it; both are stopped when the test ends.
func secondCluster(t *testing.T, extraArgs ...string) (*cluster.Cluster, *kubelet.Kubelet) {
	t.Helper()
	needRoot(t)
	ctx := testCtx(t, 3*time.Minute)
	bin, err := cluster.EnsureBinaries(ctx, cluster.CacheDir(), io.Discard) // cached by TestMain's setup
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp(env.Dir, "cluster-")
	if err != nil {
		t.Fatal(err)
	}
	c, err := cluster.Start(ctx, cluster.Options{Dir: dir, Bin: bin, ExtraArgs: extraArgs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	k, err := kubelet.New(kubelet.Options{Cluster: c, Proa: env.Proa, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	return c, k
}

// Issue 11 item 1: on a server without the watch-list feature (1.33 and
// older by default), a wrong Pod name gets no event at all; the fallback
// GET decides. When the Role lacks get, its 403s end the wait after 30 s
// like a 403 on the watch (before: the wait never ended). With get, the
// 404 ends it at once.
func TestWrongPodNameWithoutWatchList(t *testing.T) {
	t.Parallel()
	_, k := secondCluster(t, "--feature-gates=WatchList=false")
	for _, tc := range []struct {
		name     string
		verbs    []string
		min, max time.Duration
		wantLog  string
	}{
		{"get allowed", []string{"get", "watch"}, 0, 15 * time.Second, "not found: set POD_NAME"},
		{"get forbidden", []string{"watch"}, 33 * time.Second, 45 * time.Second, "access denied for 30s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			spec := kubelet.PodSpec{PodVerbs: tc.verbs, Containers: []kubelet.Container{
				{Name: "main", Proa: &kubelet.Proa{Args: []string{"--log-level", "debug"}, Command: kubelet.App("exit", "0"),
					Env: map[string]string{"POD_NAME": "no-such-pod"}}},
				{Name: "envoy", Sidecar: &kubelet.Sidecar{}}}}
			p := startPodOn(t, k, spec)
			ex := waitExit(t, testCtx(t, 90*time.Second), p, 69)
			if d := ex.Duration(); d < tc.min || d > tc.max {
				t.Errorf("proa gave up after %s, want %s..%s", d, tc.min, tc.max)
			}
			if appRan(p) {
				t.Errorf("the command ran")
			}
			if logs := strings.Join(p.Logs("main"), "\n"); !strings.Contains(logs, tc.wantLog) {
				t.Errorf("proa's output lacks %q", tc.wantLog)
			}
			recordTiming(t, "WatchList=false, wrong Pod name: proa start -> exit 69 %s", ms(ex.Duration()))
		})
	}
}

// freezingProxy forwards TCP connections to target until freeze: from then
// on, the connections open at that moment stay open but carry nothing in
// either direction (a dead peer behind a live TCP endpoint, as a stuck
// middlebox); new connections work.
type freezingProxy struct {
	l      net.Listener
	mu     sync.Mutex
	conns  []*frozenFlag
	closed chan struct{}
}

type frozenFlag struct {
	mu     sync.Mutex
	frozen bool
}

func (f *frozenFlag) get() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.frozen }

func newFreezingProxy(t *testing.T, target string) *freezingProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &freezingProxy{l: l, closed: make(chan struct{})}
	var open []net.Conn
	var openMu sync.Mutex
	t.Cleanup(func() {
		close(p.closed)
		l.Close()
		openMu.Lock()
		for _, c := range open {
			c.Close()
		}
		openMu.Unlock()
	})
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			openMu.Lock()
			open = append(open, in, out)
			openMu.Unlock()
			flag := new(frozenFlag)
			p.mu.Lock()
			p.conns = append(p.conns, flag)
			p.mu.Unlock()
			go p.pipe(in, out, flag)
			go p.pipe(out, in, flag)
		}
	}()
	return p
}

func (p *freezingProxy) pipe(src, dst net.Conn, flag *frozenFlag) {
	b := make([]byte, 32<<10)
	for {
		n, err := src.Read(b)
		if flag.get() {
			<-p.closed // hold the connection open, carrying nothing
			return
		}
		if n > 0 {
			if _, werr := dst.Write(b[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}

func (p *freezingProxy) freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, f := range p.conns {
		f.mu.Lock()
		f.frozen = true
		f.mu.Unlock()
	}
}

func (p *freezingProxy) addr() string { return p.l.Addr().String() }

// Issue 11 item 2: kube-apiserver with --disable-http2-serving serves
// HTTP/1.1, where there are no pings; a connection that stays open but
// carries nothing (frozen here by a proxy between proa and the server)
// used to hold proa until the watch request's own deadline, 330-630 s.
// Now 3 minutes without any event (bookmarks come about once a minute)
// make proa watch again; it then sees the sidecar become ready.
func TestStalledWatchOverHTTP1(t *testing.T) {
	t.Parallel()
	c, k := secondCluster(t, "--disable-http2-serving")
	proxy := newFreezingProxy(t, net.JoinHostPort(c.Host, itoa(c.Port)))
	spec := proaPod(kubelet.Sidecar{NeverReady: true}, []string{"--log-level", "debug", "-p", kubelet.URLOf("envoy", "/quit")},
		kubelet.App("exit", "0"))
	spec.Containers[0].Proa.APIAddress = proxy.addr()
	p := startPodOn(t, k, spec)
	waitWatching(t, p)
	time.Sleep(2 * time.Second) // the first events have passed the proxy
	proxy.freeze()
	frozen := time.Now()
	p.Note("proxy frozen: proa's watch connection carries nothing from now on")
	ctx := testCtx(t, 5*time.Minute)
	if err := p.SetReady(ctx, "envoy", true); err != nil {
		t.Fatal(err)
	}
	started, err := p.WaitEvent(testCtx(t, 4*time.Minute), "main/app", "started")
	if err != nil {
		t.Fatalf("the command did not start within 4 minutes of the freeze: %v", err)
	}
	d := started.Time.Sub(frozen)
	if d < 170*time.Second || d > 200*time.Second {
		t.Errorf("the command started %s after the freeze, want about 3 minutes", d)
	}
	if _, ok := p.FindLog("", "watch stalled: no event for 3m0s, watching again"); !ok {
		t.Errorf("proa did not log the stalled watch")
	}
	waitExit(t, testCtx(t, time.Minute), p, 0)
	recordTiming(t, "HTTP/1.1, frozen connection: freeze -> new watch -> command started %s", ms(d))
}

// Issue 11 item 3: the cluster CA is rotated under a running Pod:
// kube-apiserver comes back with a certificate from a new CA, then the
// kubelet writes the new ca.crt (the harder order: proa meets the new
// certificate before the file changes). proa read ca.crt once, so every
// later connection failed verification for ever; now a failed verification
// makes it read the file again, and once it has changed, the connection
// works.
func TestCARotation(t *testing.T) {
	t.Parallel()
	c, k := secondCluster(t)
	p := startPodOn(t, k, proaPod(kubelet.Sidecar{NeverReady: true},
		[]string{"--log-level", "debug", "-p", kubelet.URLOf("envoy", "/quit")}, kubelet.App("exit", "0")))
	waitWatching(t, p)
	ctx := testCtx(t, 2*time.Minute)
	p.Note("rotating the cluster CA: kube-apiserver restarted with a certificate from a new CA, then ca.crt updated")
	if err := c.RotateServingCA(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.WriteCA(); err != nil {
		t.Fatal(err)
	}
	d := readyAndRun(t, p, 35*time.Second)
	waitExit(t, testCtx(t, time.Minute), p, 0)
	failures := 0
	for _, l := range p.ProaLogs("") {
		if strings.Contains(l.Raw, "certificate signed by unknown authority") {
			failures++
		}
	}
	recordTiming(t, "CA rotated: ready status written -> command started %s; %d connections failed verification meanwhile", ms(d), failures)
}

// Issue 11 item 4: a token the API server refuses for good (here: the
// ServiceAccount was recreated after it was issued) was retried for ever.
// Now 401s that go on for 30 s after a fresh read of the token end the
// wait with exit 69 and a message that says what to check.
func TestLasting401(t *testing.T) {
	t.Parallel()
	spec := proaPod(kubelet.Sidecar{}, []string{"--log-level", "debug", "--shutdown-timeout", "3s", "-p", kubelet.URLOf("envoy", "/quit")},
		kubelet.App("exit", "0"))
	spec.RecreateServiceAccount = true
	p := startPod(t, spec)
	ex := waitExit(t, testCtx(t, 90*time.Second), p, 69)
	if d := ex.Duration(); d < 29*time.Second || d > 45*time.Second {
		t.Errorf("proa exited after %s; want 30 s of 401s plus a backoff step and the 3 s shutdown", d)
	}
	if appRan(p) {
		t.Errorf("the command ran")
	}
	l, ok := p.FindLog("", "sidecars never became ready")
	if !ok || !strings.Contains(l.Raw, "401 Unauthorized") || !strings.Contains(l.Raw, "ServiceAccount was not deleted and recreated") ||
		!strings.Contains(l.Raw, "subPath") {
		t.Errorf("proa's final error does not say what to check: %s", l.Raw)
	}
	recordTiming(t, "lasting 401: proa start -> exit 69 %s", ms(ex.Duration()))
}
