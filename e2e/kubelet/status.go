package kubelet

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"proa/e2e/cluster"
)

// CState is a container's status as written in one status update.
type CState struct {
	State        string // waiting, running, terminated
	Reason       string
	Ready        bool
	ExitCode     int
	RestartCount int
}

// StatusWrite is one PATCH of the Pod status by the kubelet.
type StatusWrite struct {
	Seq        int
	Sent, Done time.Time // request sent, response received
	Phase      string
	Containers map[string]CState
	Changes    []string // what differs from the previous write
}

func (p *Pod) snapshotLocked() (cluster.Obj, StatusWrite) {
	rfc := func(t time.Time) string { return t.UTC().Format(time.RFC3339) }
	w := StatusWrite{Phase: p.phase, Containers: map[string]CState{}}
	var inits, mains []cluster.Obj
	allReady, mainsReady := true, true
	for _, c := range p.containers {
		image := "proa-e2e/sidecar:test"
		if c.spec.Proa != nil {
			image = "proa-e2e/app:test"
		}
		st := cluster.Obj{"name": c.spec.Name, "image": image,
			"imageID":      "docker.io/" + image + "@sha256:" + strings.Repeat("0", 64),
			"ready":        c.ready,
			"restartCount": c.restartCount,
			"started":      c.started,
		}
		reason := c.reason
		switch c.state {
		case "running":
			st["containerID"] = c.id
			st["state"] = cluster.Obj{"running": cluster.Obj{"startedAt": rfc(c.startedAt)}}
		case "terminated":
			st["containerID"] = c.id
			st["state"] = cluster.Obj{"terminated": cluster.Obj{"exitCode": c.exitCode, "reason": c.reason,
				"startedAt": rfc(c.startedAt), "finishedAt": rfc(c.finishedAt), "containerID": c.id}}
		default:
			if reason == "" {
				reason = "ContainerCreating"
				if !c.native && !p.initialized {
					reason = "PodInitializing"
				}
			}
			st["state"] = cluster.Obj{"waiting": cluster.Obj{"reason": reason}}
		}
		state := c.state
		if state == "" {
			state = "waiting"
		}
		w.Containers[c.spec.Name] = CState{State: state, Reason: reason, Ready: c.ready, ExitCode: c.exitCode, RestartCount: c.restartCount}
		if l := c.last; l != nil {
			st["lastState"] = cluster.Obj{"terminated": cluster.Obj{"exitCode": l.exitCode, "reason": l.reason,
				"startedAt": rfc(l.startedAt), "finishedAt": rfc(l.finishedAt), "containerID": l.id}}
		}
		if !c.ready {
			allReady = false
			if !c.native {
				mainsReady = false
			}
		}
		if c.native {
			inits = append(inits, st)
		} else {
			mains = append(mains, st)
		}
	}
	cond := func(typ string, ok bool) cluster.Obj {
		s := "False"
		if ok {
			s = "True"
		}
		return cluster.Obj{"type": typ, "status": s, "lastProbeTime": nil, "lastTransitionTime": rfc(time.Now())}
	}
	done := p.phase == "Succeeded" || p.phase == "Failed"
	st := cluster.Obj{
		"phase": p.phase, "hostIP": "127.0.0.1", "podIP": "127.0.0.1",
		"hostIPs": []cluster.Obj{{"ip": "127.0.0.1"}}, "podIPs": []cluster.Obj{{"ip": "127.0.0.1"}},
		"qosClass": "BestEffort",
		"conditions": []cluster.Obj{
			cond("PodReadyToStartContainers", !done),
			cond("Initialized", p.initialized),
			cond("Ready", allReady && !done),
			cond("ContainersReady", mainsReady && !done),
			cond("PodScheduled", true),
		},
		"containerStatuses": mains,
	}
	if !p.startTime.IsZero() {
		st["startTime"] = rfc(p.startTime)
	}
	if inits != nil {
		st["initContainerStatuses"] = inits
	}
	return st, w
}

// statusWriter PATCHes the status whenever it changed, one write at a time,
// retrying (with the latest state) while the API server is unavailable.
func (p *Pod) statusWriter() {
	defer p.wg.Done()
	var prev *StatusWrite
	for {
		select {
		case <-p.dirty:
		case <-p.closed:
			return
		}
		p.mu.Lock()
		held := p.holdStatus
		p.mu.Unlock()
		if held {
			continue // marked dirty again once released
		}
		for attempt := 0; ; attempt++ {
			p.mu.Lock()
			obj, w := p.snapshotLocked()
			p.mu.Unlock()
			w.Sent = time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := p.cl.PatchPodStatus(ctx, p.Namespace, p.Name, obj)
			cancel()
			if err == nil {
				w.Done = time.Now()
				w.Changes = diff(prev, &w)
				// Recorded before waiters hear of the write, so that a
				// timeline printed after WaitWrite includes it.
				if len(w.Changes) > 0 {
					p.eventAt(w.Done, "kubelet", "status: "+strings.Join(w.Changes, "; "), nil)
				}
				p.mu.Lock()
				w.Seq = len(p.writes) + 1
				p.writes = append(p.writes, w)
				p.notifyLocked()
				p.mu.Unlock()
				prev = &w
				break
			}
			if attempt == 0 {
				p.event("kubelet", "status update failed, retrying: "+err.Error(), nil)
			}
			select {
			case <-p.closed:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
}

func describe(s CState) string {
	switch s.State {
	case "running":
		if s.Ready {
			return "running, ready"
		}
		return "running, not ready"
	case "terminated":
		return fmt.Sprintf("terminated (exit %d)", s.ExitCode)
	}
	return "waiting (" + s.Reason + ")"
}

func diff(prev, cur *StatusWrite) []string {
	var out []string
	var names []string
	for n := range cur.Containers {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		s := cur.Containers[n]
		if prev != nil {
			if o, ok := prev.Containers[n]; ok && describe(o) == describe(s) && o.RestartCount == s.RestartCount {
				continue
			}
		}
		d := n + " " + describe(s)
		if s.RestartCount > 0 {
			d += fmt.Sprintf(" restarts=%d", s.RestartCount)
		}
		out = append(out, d)
	}
	if prev == nil || prev.Phase != cur.Phase {
		out = append(out, "phase "+cur.Phase)
	}
	return out
}

// Writes returns the status writes so far.
func (p *Pod) Writes() []StatusWrite {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]StatusWrite(nil), p.writes...)
}

// FirstWrite returns the first status write for which match is true.
func (p *Pod) FirstWrite(match func(StatusWrite) bool) (StatusWrite, bool) {
	for _, w := range p.Writes() {
		if match(w) {
			return w, true
		}
	}
	return StatusWrite{}, false
}

// WaitWrite waits for a status write for which match is true and returns
// the first one.
func (p *Pod) WaitWrite(ctx context.Context, what string, match func(StatusWrite) bool) (StatusWrite, error) {
	var w StatusWrite
	err := p.WaitFor(ctx, "status write: "+what, func() bool {
		var ok bool
		w, ok = p.FirstWrite(match)
		return ok
	})
	return w, err
}

// Ready matches a write where container name is ready.
func Ready(name string) func(StatusWrite) bool {
	return func(w StatusWrite) bool { return w.Containers[name].Ready }
}

// Terminated matches a write where container name is terminated.
func Terminated(name string) func(StatusWrite) bool {
	return func(w StatusWrite) bool { return w.Containers[name].State == "terminated" }
}
