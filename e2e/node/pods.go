package node

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"proa/e2e/cluster"
)

// Namespace creates a namespace with what the controllers would add to it:
// the default ServiceAccount and the kube-root-ca.crt ConfigMap (without
// which no projected service-account volume mounts).
func (n *Node) Namespace(ctx context.Context, name string) error {
	c := n.Cluster
	if err := c.CreateNamespace(ctx, name); err != nil && !cluster.IsCode(err, 409) {
		return err
	}
	if err := c.CreateServiceAccount(ctx, name, "default"); err != nil && !cluster.IsCode(err, 409) {
		return err
	}
	cm := cluster.Obj{"apiVersion": "v1", "kind": "ConfigMap", "metadata": cluster.Obj{"name": "kube-root-ca.crt"},
		"data": cluster.Obj{"ca.crt": string(c.CAPEM)}}
	if err := c.Do(ctx, "POST", "/api/v1/namespaces/"+name+"/configmaps", cm, nil); err != nil && !cluster.IsCode(err, 409) {
		return err
	}
	return nil
}

// PodObj is the part of a Pod the tests read.
type PodObj struct {
	Metadata struct {
		Name, Namespace, UID string
		DeletionTimestamp    *string
	}
	Status struct {
		Phase                                    string
		ContainerStatuses, InitContainerStatuses []ContainerStatus
	}
}

// ContainerStatus is a container's status as the kubelet writes it.
type ContainerStatus struct {
	Name             string
	Ready            bool
	RestartCount     int
	State, LastState ContainerState
	Started          *bool
}

// ContainerState is one of waiting, running or terminated.
type ContainerState struct {
	Waiting *struct {
		Reason, Message string
	}
	Running *struct {
		StartedAt time.Time
	}
	Terminated *struct {
		ExitCode, Signal      int
		Reason                string
		StartedAt, FinishedAt time.Time
	}
}

// Container returns the status of container name (regular or init).
func (p PodObj) Container(name string) (ContainerStatus, bool) {
	for _, s := range append(p.Status.ContainerStatuses, p.Status.InitContainerStatuses...) {
		if s.Name == name {
			return s, true
		}
	}
	return ContainerStatus{}, false
}

// Terminated returns the exit code of container name if it has terminated.
func (p PodObj) Terminated(name string) (int, bool) {
	s, ok := p.Container(name)
	if !ok || s.State.Terminated == nil {
		return 0, false
	}
	return s.State.Terminated.ExitCode, true
}

// PodState is a Pod as the test saw it, and when.
type PodState struct {
	Seen time.Time
	Pod  PodObj
	Raw  json.RawMessage
}

// Pod follows one Pod through a watch: every state, and its containers'
// logs, kept after the Pod is gone.
type Pod struct {
	Namespace, Name, UID string
	Created              time.Time

	n       *Node
	mu      sync.Mutex
	states  []PodState
	gone    bool
	changed chan struct{}
	logs    map[string]string // log file (CONTAINER/N.log) → content
	cancel  context.CancelFunc
	done    chan struct{}
}

// CreatePod creates pod (a v1 Pod object; spec.nodeName is set to the
// node) in namespace ns and follows it.
func (n *Node) CreatePod(ctx context.Context, ns string, pod cluster.Obj) (*Pod, error) {
	spec, _ := pod["spec"].(cluster.Obj)
	if spec == nil {
		return nil, fmt.Errorf("pod has no spec")
	}
	spec["nodeName"] = NodeName
	var out struct{ Metadata struct{ Name, UID string } }
	created := time.Now()
	if err := n.Cluster.Do(ctx, "POST", "/api/v1/namespaces/"+ns+"/pods", pod, &out); err != nil {
		return nil, fmt.Errorf("creating pod in %s: %w", ns, err)
	}
	wctx, cancel := context.WithCancel(context.Background())
	p := &Pod{Namespace: ns, Name: out.Metadata.Name, UID: out.Metadata.UID, Created: created,
		n: n, changed: make(chan struct{}), logs: map[string]string{}, cancel: cancel, done: make(chan struct{})}
	go p.follow(wctx)
	return p, nil
}

// follow watches the Pod (again after a stream ends) and reads its logs,
// until it is deleted or Close.
func (p *Pod) follow(ctx context.Context) {
	defer close(p.done)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	go func() {
		for ctx.Err() == nil {
			p.readLogs()
			select {
			case <-ctx.Done():
			case <-tick.C:
			}
		}
	}()
	path := "/api/v1/namespaces/" + p.Namespace + "/pods?watch=1&fieldSelector=" + url.QueryEscape("metadata.name="+p.Name)
	for ctx.Err() == nil {
		err := p.n.Cluster.Watch(ctx, path, func(ev cluster.WatchEvent) bool {
			seen := time.Now()
			var obj PodObj
			if ev.Type == "ERROR" || json.Unmarshal(ev.Object, &obj) != nil || obj.Metadata.UID != p.UID {
				return true
			}
			p.readLogs()
			p.mu.Lock()
			p.states = append(p.states, PodState{Seen: seen, Pod: obj, Raw: ev.Object})
			if ev.Type == "DELETED" {
				p.gone = true
			}
			close(p.changed)
			p.changed = make(chan struct{})
			p.mu.Unlock()
			return ev.Type != "DELETED"
		})
		p.mu.Lock()
		gone := p.gone
		p.mu.Unlock()
		if gone {
			return
		}
		if err != nil && ctx.Err() == nil {
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// Close stops following the Pod.
func (p *Pod) Close() {
	p.cancel()
	<-p.done
	p.readLogs()
}

// States returns every state seen so far.
func (p *Pod) States() []PodState {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.states)
}

// Latest is the last state seen (zero before the first).
func (p *Pod) Latest() PodState {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.states) == 0 {
		return PodState{}
	}
	return p.states[len(p.states)-1]
}

// Gone reports whether the Pod was deleted.
func (p *Pod) Gone() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gone
}

// WaitFor returns the first state, seen so far or later, for which cond
// holds. what names the condition in the error.
func (p *Pod) WaitFor(ctx context.Context, what string, cond func(PodObj) bool) (PodState, error) {
	seen := 0
	for {
		p.mu.Lock()
		states, changed, gone := p.states[seen:], p.changed, p.gone
		seen = len(p.states)
		p.mu.Unlock()
		for _, s := range states {
			if cond(s.Pod) {
				return s, nil
			}
		}
		if gone {
			return PodState{}, fmt.Errorf("pod %s/%s was deleted before %s", p.Namespace, p.Name, what)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return PodState{}, fmt.Errorf("pod %s/%s: no %s before the test's deadline", p.Namespace, p.Name, what)
		}
	}
}

// WaitGone waits until the Pod is deleted.
func (p *Pod) WaitGone(ctx context.Context) error {
	for {
		p.mu.Lock()
		changed, gone := p.changed, p.gone
		p.mu.Unlock()
		if gone {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("pod %s/%s: not deleted before the test's deadline", p.Namespace, p.Name)
		}
	}
}

// Finished is a WaitFor condition: phase Succeeded or Failed.
func Finished(p PodObj) bool { return p.Status.Phase == "Succeeded" || p.Status.Phase == "Failed" }

// Delete deletes the Pod, with a grace period when grace >= 0.
func (p *Pod) Delete(ctx context.Context, grace int) error {
	path := "/api/v1/namespaces/" + p.Namespace + "/pods/" + p.Name
	var body any
	if grace >= 0 {
		body = cluster.Obj{"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": grace}
	}
	return p.n.Cluster.Do(ctx, "DELETE", path, body, nil)
}

// LogLine is a line a container wrote, from the kubelet's log file.
type LogLine struct {
	Container string
	Restart   int       // the container's restart count when it wrote it
	Logged    time.Time // when the runtime read it
	Stream    string
	Text      string
	JSON      map[string]any // the line as a JSON object, if it is one
	Time      time.Time      // its own "time" field, else Logged
	Msg       string         // its "msg" field
}

// readLogs copies the Pod's log files, which the kubelet removes with it.
func (p *Pod) readLogs() {
	dir := filepath.Join(p.n.LogDir, p.Namespace+"_"+p.Name+"_"+p.UID)
	files, _ := filepath.Glob(filepath.Join(dir, "*", "*.log"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		key := filepath.Base(filepath.Dir(f)) + "/" + filepath.Base(f)
		p.mu.Lock()
		if len(b) > len(p.logs[key]) {
			p.logs[key] = string(b)
		}
		p.mu.Unlock()
	}
}

// Logs returns container's lines, every run in order.
func (p *Pod) Logs(container string) []LogLine {
	p.readLogs()
	p.mu.Lock()
	defer p.mu.Unlock()
	var runs []int
	for key := range p.logs {
		c, f, _ := strings.Cut(key, "/")
		if n, err := strconv.Atoi(strings.TrimSuffix(f, ".log")); c == container && err == nil {
			runs = append(runs, n)
		}
	}
	slices.Sort(runs)
	var out []LogLine
	for _, run := range runs {
		for _, l := range strings.Split(p.logs[container+"/"+strconv.Itoa(run)+".log"], "\n") {
			// TIME STREAM TAG TEXT (CRI log format)
			f := strings.SplitN(l, " ", 4)
			if len(f) < 4 {
				continue
			}
			ll := LogLine{Container: container, Restart: run, Stream: f[1], Text: f[3]}
			ll.Logged, _ = time.Parse(time.RFC3339Nano, f[0])
			ll.Time = ll.Logged
			if json.Unmarshal([]byte(ll.Text), &ll.JSON) == nil {
				if t, ok := ll.JSON["time"].(string); ok {
					if tt, err := time.Parse(time.RFC3339Nano, t); err == nil {
						ll.Time = tt
					}
				}
				ll.Msg, _ = ll.JSON["msg"].(string)
			}
			out = append(out, ll)
		}
	}
	return out
}

// FindLog returns container's first line whose msg is msg.
func (p *Pod) FindLog(container, msg string) (LogLine, bool) {
	for _, l := range p.Logs(container) {
		if l.Msg == msg {
			return l, true
		}
	}
	return LogLine{}, false
}

// FindLogs returns container's lines whose msg is msg.
func (p *Pod) FindLogs(container, msg string) []LogLine {
	var out []LogLine
	for _, l := range p.Logs(container) {
		if l.Msg == msg {
			out = append(out, l)
		}
	}
	return out
}
