// Package kubelet is a simulated kubelet for the e2e tests: it creates a Pod
// (and its namespace, ServiceAccount, RBAC and bound token) in a real API
// server, runs each container as a local process, probes readiness, and
// writes the Pod status the way the kubelet does.
//
// Sidecars are the harness binary itself in "sidecar" mode; proa's container
// runs proa in private mount and UTS namespaces with the service-account
// volume at /var/run/secrets/kubernetes.io/serviceaccount and the hostname set
// to the Pod name. Every process is started with proc.Start, so it dies with
// the harness.
package kubelet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"proa/e2e/cluster"
)

// Options configure a Kubelet.
type Options struct {
	Cluster      *cluster.Cluster
	Proa         string        // path of the proa binary
	Dir          string        // working directory for pods; must exist
	ProbePeriod  time.Duration // readiness probe period; default 200ms
	RestartDelay time.Duration // back-off before restarting a container; default 500ms
	// Output, if set, receives one line per event as it happens: kubelet
	// actions, container output, proa's log lines.
	Output io.Writer
}

// Kubelet runs Pods.
type Kubelet struct {
	opts  Options
	self  string // this executable
	app   string // symlink to it, named "app", used as the test application
	outMu sync.Mutex
}

// New prepares a kubelet. The running executable must call
// RunRoleIfRequested first thing in main or TestMain.
func New(opts Options) (*Kubelet, error) {
	if opts.ProbePeriod == 0 {
		opts.ProbePeriod = 200 * time.Millisecond
	}
	if opts.RestartDelay == 0 {
		opts.RestartDelay = 500 * time.Millisecond
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	bin := filepath.Join(opts.Dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return nil, err
	}
	app := filepath.Join(bin, "app")
	if err := os.Symlink(self, app); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, err
	}
	return &Kubelet{opts: opts, self: self, app: app}, nil
}

// Pod is a running Pod.
type Pod struct {
	Spec      PodSpec // with defaults filled in
	Namespace string
	Name      string
	UID       string
	Dir       string // this Pod's files: events, logs, the service-account volume
	Created   time.Time

	k          *Kubelet
	cl         *cluster.Cluster
	containers []*container // native sidecars first, in spec order
	events     *recorder
	saDir      string
	pause      *os.Process // PID 1 of the shared PID namespace, if any
	pauseDone  chan struct{}

	mu          sync.Mutex
	changed     chan struct{} // closed and replaced on every change
	phase       string
	initialized bool
	terminating bool
	// holdStatus: the Pod is being deleted and its containers stopped; like
	// the kubelet, write no status until every container has stopped.
	holdStatus bool
	closedFlag bool // Close was called
	startTime  time.Time
	writes     []StatusWrite
	tokens     []string
	secret     string // the Secret the first token is bound to

	dirty     chan struct{}
	closed    chan struct{}
	closeOnce sync.Once
	finished  chan struct{} // closed when the Pod reached Succeeded/Failed
	wg        sync.WaitGroup
}

// Run creates the Pod and everything it needs, then starts its containers
// in the background: native sidecars first, then the regular containers.
func (k *Kubelet) Run(ctx context.Context, spec PodSpec) (p *Pod, err error) {
	spec.defaults()
	p = &Pod{Spec: spec, Namespace: spec.Namespace, Name: spec.Name, k: k, cl: k.opts.Cluster,
		changed: make(chan struct{}), phase: "Pending", dirty: make(chan struct{}, 1),
		closed: make(chan struct{}), finished: make(chan struct{})}
	p.Dir = filepath.Join(k.opts.Dir, "pods", spec.Namespace+"_"+spec.Name)
	p.saDir = filepath.Join(p.Dir, "serviceaccount")
	if err := os.MkdirAll(p.saDir, 0o755); err != nil {
		return nil, err
	}
	p.Created = time.Now() // replaced by the creation time below
	p.events = newRecorder(filepath.Join(p.Dir, "events.jsonl"), k)
	pod := p // the error returns below set p to nil
	defer func() {
		if err != nil {
			pod.Close()
		}
	}()
	names := map[string]bool{}
	add := func(c Container, native bool) error {
		if c.Name == "" || names[c.Name] {
			return fmt.Errorf("container name %q empty or repeated", c.Name)
		}
		if (c.Sidecar == nil) == (c.Proa == nil) {
			return fmt.Errorf("container %s: set exactly one of Sidecar and Proa", c.Name)
		}
		names[c.Name] = true
		ct := &container{pod: p, spec: c, native: native}
		if c.Sidecar != nil {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return err
			}
			ct.listener = l.(*net.TCPListener)
			ct.port = l.Addr().(*net.TCPAddr).Port
			if c.Sidecar.ProxyAPI {
				if spec.ShareProcessNamespace {
					return fmt.Errorf("container %s: ProxyAPI needs a Pod without ShareProcessNamespace", c.Name)
				}
				if l, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
					return err
				}
				ct.proxyListener = l.(*net.TCPListener)
				ct.proxyPort = l.Addr().(*net.TCPAddr).Port
			}
		}
		p.containers = append(p.containers, ct)
		return nil
	}
	for _, c := range spec.InitContainers {
		if c.RestartPolicy != "Always" {
			return nil, fmt.Errorf("init container %s: only native sidecars (RestartPolicy Always) are supported", c.Name)
		}
		if err := add(c, true); err != nil {
			return nil, err
		}
	}
	for _, c := range spec.Containers {
		if err := add(c, false); err != nil {
			return nil, err
		}
	}

	cl := p.cl
	if err := cl.CreateNamespace(ctx, p.Namespace); err != nil && !cluster.IsCode(err, 409) {
		return nil, err
	}
	if err := cl.CreateServiceAccount(ctx, p.Namespace, spec.ServiceAccount); err != nil && !cluster.IsCode(err, 409) {
		return nil, err
	}
	if !spec.NoRBAC {
		if err := cl.GrantPods(ctx, p.Namespace, "pod-reader-"+spec.Name, spec.ServiceAccount, spec.PodVerbs); err != nil {
			return nil, err
		}
	}
	p.Created = time.Now()
	p.events.setStart(p.Created)
	if p.UID, err = cl.CreatePod(ctx, p.Namespace, p.manifest()); err != nil {
		return nil, err
	}
	p.event("kubelet", "pod created", nil)
	bound := cluster.BoundObject{Kind: "Pod", Name: p.Name, UID: p.UID}
	if spec.TokenBoundToSecret {
		p.secret = p.Name + "-token-1"
		uid, err := cl.CreateSecret(ctx, p.Namespace, p.secret)
		if err != nil {
			return nil, err
		}
		bound = cluster.BoundObject{Kind: "Secret", Name: p.secret, UID: uid}
	}
	tok, err := cl.RequestToken(ctx, p.Namespace, spec.ServiceAccount, bound)
	if err != nil {
		return nil, err
	}
	if err := p.writeServiceAccount(tok); err != nil {
		return nil, err
	}
	if spec.RecreateServiceAccount {
		if err := p.recreateServiceAccount(ctx, tok); err != nil {
			return nil, err
		}
	}
	p.wg.Add(2)
	go p.statusWriter()
	go p.run()
	return p, nil
}

// run starts the containers the way the kubelet does.
func (p *Pod) run() {
	defer p.wg.Done()
	p.markDirty()
	if p.Spec.ShareProcessNamespace {
		if err := p.startPause(); err != nil {
			p.event("kubelet", err.Error(), nil)
			return
		}
	}
	for _, c := range p.containers {
		if c.native {
			p.startContainer(c)
		}
	}
	p.mu.Lock()
	p.initialized = true
	p.startTime = time.Now()
	p.mu.Unlock()
	for _, c := range p.containers {
		if !c.native {
			p.startContainer(c)
		}
	}
	p.mu.Lock()
	if p.phase == "Pending" {
		p.phase = "Running"
	}
	p.notifyLocked()
	p.mu.Unlock()
}

// terminate stops the native sidecars once every regular container is done
// (in reverse order, SIGTERM then SIGKILL after the grace period) and sets
// the final phase.
func (p *Pod) terminate() {
	defer p.wg.Done()
	grace := 30 * time.Second
	if g := p.Spec.TerminationGracePeriodSeconds; g > 0 {
		grace = time.Duration(g) * time.Second
	}
	p.stopNatives(func() time.Duration { return grace })
	p.finish()
}

// stopNatives stops the native sidecars in reverse start order, each with
// SIGKILL after grace().
func (p *Pod) stopNatives(grace func() time.Duration) {
	for i := len(p.containers) - 1; i >= 0; i-- {
		if c := p.containers[i]; c.native {
			p.event("kubelet", "stopping native sidecar "+c.spec.Name, nil)
			c.stop(grace())
		}
	}
}

// finish sets the final phase once every container has stopped, and
// releases the status writes a deletion held.
func (p *Pod) finish() {
	p.mu.Lock()
	p.holdStatus = false
	p.phase = "Succeeded"
	for _, c := range p.containers {
		if !c.native && c.exitCode != 0 {
			p.phase = "Failed"
		}
	}
	phase := p.phase
	p.notifyLocked()
	p.mu.Unlock()
	p.event("kubelet", "pod "+phase, nil)
	p.markDirty()
	close(p.finished)
}

// Delete deletes the Pod with a grace period, as kubectl delete
// --grace-period=N does, then stops it as the kubelet does: the API server
// sets deletionTimestamp (now + N) and deletionGracePeriodSeconds; the
// kubelet sends SIGTERM to every regular container at once, then to the
// native sidecars, and SIGKILL to those still running when the grace period
// ends; it writes no container status until every container has stopped
// (measured on a real kubelet 1.34), then removes the Pod object.
func (p *Pod) Delete(ctx context.Context, grace int) error {
	p.mu.Lock()
	busy := p.terminating
	p.mu.Unlock()
	if busy {
		return errors.New("the Pod is already finishing")
	}
	opts := cluster.Obj{"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": grace}
	if err := p.cl.Do(ctx, "DELETE", "/api/v1/namespaces/"+p.Namespace+"/pods/"+p.Name, opts, nil); err != nil {
		return fmt.Errorf("deleting the Pod: %w", err)
	}
	start := time.Now()
	p.event("kubelet", fmt.Sprintf("pod deleted with a grace period of %ds: stopping every container", grace), nil)
	p.mu.Lock()
	p.terminating, p.holdStatus = true, true
	p.wg.Add(1)
	p.mu.Unlock()
	go p.stopForDeletion(start.Add(time.Duration(grace) * time.Second))
	return nil
}

func (p *Pod) stopForDeletion(kill time.Time) {
	defer p.wg.Done()
	var wg sync.WaitGroup
	for _, c := range p.containers {
		if !c.native {
			wg.Go(func() { c.stop(time.Until(kill)) })
		}
	}
	wg.Wait()
	p.stopNatives(func() time.Duration { return time.Until(kill) })
	p.finish()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() {
		select {
		case <-p.closed: // Close waits for this goroutine
			cancel()
		case <-ctx.Done():
		}
	}()
	if _, err := p.WaitWrite(ctx, "final status", func(w StatusWrite) bool { return w.Phase == p.Phase() }); err == nil {
		opts := cluster.Obj{"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
			"preconditions": cluster.Obj{"uid": p.UID}}
		if err := p.cl.Do(ctx, "DELETE", "/api/v1/namespaces/"+p.Namespace+"/pods/"+p.Name, opts, nil); err != nil {
			p.event("kubelet", "removing the Pod object: "+err.Error(), nil)
		} else {
			p.event("kubelet", "pod object removed", nil)
		}
	}
}

// Close kills every container process still running and stops the kubelet's
// work for this Pod. The API objects are left in place.
func (p *Pod) Close() {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closedFlag = true
		p.mu.Unlock()
		close(p.closed)
		p.mu.Lock()
		pause, pauseDone := p.pause, p.pauseDone
		p.mu.Unlock()
		if pause != nil {
			// The kernel kills every process of the PID namespace with its
			// PID 1; the enter helpers then exit too.
			pause.Kill()
		}
		for _, c := range p.containers {
			c.kill()
			p.mu.Lock()
			if c.listener != nil {
				c.listener.Close()
				c.listener = nil
			}
			if c.proxyListener != nil {
				c.proxyListener.Close()
				c.proxyListener = nil
			}
			p.mu.Unlock()
		}
		p.wg.Wait()
		if pause != nil {
			<-pauseDone
		}
		p.events.close()
	})
}

func (p *Pod) markDirty() {
	select {
	case p.dirty <- struct{}{}:
	default:
	}
}

func (p *Pod) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// WaitFor polls cond (called without locks held) each time the Pod's state
// changes, and at least every 100 ms, until it returns true or ctx ends.
func (p *Pod) WaitFor(ctx context.Context, what string, cond func() bool) error {
	for {
		p.mu.Lock()
		ch := p.changed
		p.mu.Unlock()
		if cond() {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-ch:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// WaitFinished waits until every regular container is done, the native
// sidecars were stopped and the final phase (Succeeded or Failed) was
// written, and returns the phase.
func (p *Pod) WaitFinished(ctx context.Context) (string, error) {
	select {
	case <-p.finished:
		phase := p.Phase()
		_, err := p.WaitWrite(ctx, "phase "+phase, func(w StatusWrite) bool { return w.Phase == phase })
		return phase, err
	case <-ctx.Done():
		return "", fmt.Errorf("waiting for the Pod to finish: %w", ctx.Err())
	}
}

func (p *Pod) container(name string) *container {
	for _, c := range p.containers {
		if c.spec.Name == name {
			return c
		}
	}
	panic("kubelet: no container " + name)
}

// ProaContainer is the name of the first container running proa.
func (p *Pod) ProaContainer() string {
	for _, c := range p.containers {
		if c.spec.Proa != nil {
			return c.spec.Name
		}
	}
	panic("kubelet: the Pod has no proa container")
}

func sortedKeys(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
