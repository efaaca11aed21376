package realnode

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"proa/e2e/cluster"
	"proa/e2e/node"
)

// testCtx is a context that ends after d or when the test ends.
func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// podName derives a DNS-1123 name from the test's name.
func podName(t *testing.T) string { return cluster.DNSName(strings.TrimPrefix(t.Name(), "Test")) }

// podSpec is the Pod template of a Job-like workload.
type podSpec struct {
	restartPolicy         string // default Never
	grace                 int    // terminationGracePeriodSeconds, if > 0
	shareProcessNamespace bool
	initContainers        []cluster.Obj
	containers            []cluster.Obj
	volumes               []cluster.Obj
}

// newNamespace creates namespace "rn-" + the test's name with ServiceAccount
// proa and a Role granting get, list and watch on pods.
func newNamespace(t *testing.T, ctx context.Context) string {
	t.Helper()
	node.Require(t)
	ns := "rn-" + podName(t)
	if err := nd.Namespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	if err := nd.Cluster.CreateServiceAccount(ctx, ns, "proa"); err != nil {
		t.Fatal(err)
	}
	if err := nd.Cluster.GrantPods(ctx, ns, "proa", "proa", []string{"get", "list", "watch"}); err != nil {
		t.Fatal(err)
	}
	return ns
}

// startPod plays the Job controller: it creates the Pod of spec, named
// after the test, on the node. At the end of the test the Pod is deleted
// if it still exists; on failure its states and logs are logged.
func startPod(t *testing.T, spec podSpec) *node.Pod {
	t.Helper()
	ctx := testCtx(t, 30*time.Second)
	ns := newNamespace(t, ctx)
	ps := cluster.Obj{"serviceAccountName": "proa", "restartPolicy": "Never", "containers": spec.containers}
	if spec.restartPolicy != "" {
		ps["restartPolicy"] = spec.restartPolicy
	}
	if spec.grace > 0 {
		ps["terminationGracePeriodSeconds"] = spec.grace
	}
	if spec.shareProcessNamespace {
		ps["shareProcessNamespace"] = true
	}
	if spec.initContainers != nil {
		ps["initContainers"] = spec.initContainers
	}
	if spec.volumes != nil {
		ps["volumes"] = spec.volumes
	}
	return createPod(t, ctx, ns, cluster.Obj{"apiVersion": "v1", "kind": "Pod",
		"metadata": cluster.Obj{"name": podName(t), "labels": cluster.Obj{"job-name": podName(t)}}, "spec": ps})
}

// createPod creates pod in ns on the node; at the end of the test it is
// deleted if it still exists, and on failure its states and logs are logged.
func createPod(t *testing.T, ctx context.Context, ns string, pod cluster.Obj) *node.Pod {
	t.Helper()
	p, err := nd.CreatePod(ctx, ns, pod)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !p.Gone() {
			p.Delete(context.Background(), 0)
		}
		p.Close()
		if t.Failed() {
			t.Logf("pod %s/%s:\n%s", p.Namespace, p.Name, describe(p))
		}
	})
	return p
}

// describe is a Pod's history: its states as the test saw them, and every
// container's log.
func describe(p *node.Pod) string {
	var b strings.Builder
	var last string
	names := map[string]bool{}
	for _, s := range p.States() {
		line := s.Pod.Status.Phase
		if s.Pod.Metadata.DeletionTimestamp != nil {
			line += " (deleting)"
		}
		for _, c := range append(s.Pod.Status.InitContainerStatuses, s.Pod.Status.ContainerStatuses...) {
			names[c.Name] = true
			line += fmt.Sprintf(" %s=%s", c.Name, stateString(c))
		}
		if line != last {
			fmt.Fprintf(&b, "  %s +%s %s\n", s.Seen.Format("15:04:05.000"), ms(s.Seen.Sub(p.Created)), line)
			last = line
		}
	}
	for name := range names {
		fmt.Fprintf(&b, "  container %s log:\n", name)
		for _, l := range p.Logs(name) {
			fmt.Fprintf(&b, "    [%d %s] %s\n", l.Restart, l.Logged.Format("15:04:05.000"), l.Text)
		}
	}
	return b.String()
}

func stateString(c node.ContainerStatus) string {
	s := "?"
	switch st := c.State; {
	case st.Terminated != nil:
		s = "terminated(" + strconv.Itoa(st.Terminated.ExitCode) + "," + st.Terminated.Reason + ")"
	case st.Running != nil:
		s = "running"
		if c.Ready {
			s += ",ready"
		}
	case st.Waiting != nil:
		s = "waiting(" + st.Waiting.Reason + ")"
	}
	if c.RestartCount > 0 {
		s += fmt.Sprintf("[restarts=%d]", c.RestartCount)
	}
	return s
}

// proaContainer runs proa from the application image (proa's image plus
// /app) with args, then "--", then the test application with actions.
func proaContainer(name string, args []string, actions ...string) cluster.Obj {
	return cluster.Obj{"name": name, "image": node.AppWithProaImage, "imagePullPolicy": "Never",
		"command": []string{"/proa"}, "args": append(append(args, "--", "/app"), actions...)}
}

// sidecar is the HTTP sidecar on port, with a readinessProbe on /ready
// every second; env holds NAME=VALUE settings (see package testbin).
func sidecar(name string, port int, env ...string) cluster.Obj {
	vars := []cluster.Obj{{"name": "SIDECAR_NAME", "value": name}, {"name": "SIDECAR_ADDR", "value": ":" + strconv.Itoa(port)}}
	for _, e := range env {
		k, v, _ := strings.Cut(e, "=")
		vars = append(vars, cluster.Obj{"name": k, "value": v})
	}
	return cluster.Obj{"name": name, "image": node.SidecarImage, "imagePullPolicy": "Never", "env": vars,
		"readinessProbe": cluster.Obj{"httpGet": cluster.Obj{"path": "/ready", "port": port},
			"periodSeconds": 1, "failureThreshold": 1}}
}

// quitURL is the sidecar's quit endpoint on port.
func quitURL(port int) string { return "http://127.0.0.1:" + strconv.Itoa(port) + "/quitquitquit" }

// events returns the lines of container whose "src" is src (the test
// programs' events) and whose msg is msg.
func events(p *node.Pod, container, src, msg string) []node.LogLine {
	var out []node.LogLine
	for _, l := range p.Logs(container) {
		if l.JSON != nil && l.JSON["src"] == src && l.Msg == msg {
			out = append(out, l)
		}
	}
	return out
}

// event is the first such line, failing the test when there is none.
func event(t *testing.T, p *node.Pod, container, src, msg string) node.LogLine {
	t.Helper()
	ev := events(p, container, src, msg)
	if len(ev) == 0 {
		t.Errorf("container %s: no %q event from %s", container, msg, src)
		return node.LogLine{}
	}
	return ev[0]
}

// proaLines returns proa's log lines in container with message msg.
func proaLines(p *node.Pod, container, msg string) []node.LogLine {
	var out []node.LogLine
	for _, l := range p.Logs(container) {
		if l.JSON != nil && l.JSON["level"] != nil && l.Msg == msg {
			out = append(out, l)
		}
	}
	return out
}

// proaLine is proa's first line with msg, failing the test when there is none.
func proaLine(t *testing.T, p *node.Pod, container, msg string) node.LogLine {
	t.Helper()
	l := proaLines(p, container, msg)
	if len(l) == 0 {
		t.Errorf("container %s: proa logged no %q line", container, msg)
		return node.LogLine{}
	}
	return l[0]
}

// waitReady waits until the API shows container ready.
func waitReady(t *testing.T, ctx context.Context, p *node.Pod, container string) node.PodState {
	t.Helper()
	s, err := p.WaitFor(ctx, container+" ready", func(o node.PodObj) bool {
		c, ok := o.Container(container)
		return ok && c.Ready
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// waitFinished waits for phase Succeeded or Failed and checks it is want.
func waitFinished(t *testing.T, ctx context.Context, p *node.Pod, want string) node.PodState {
	t.Helper()
	s, err := p.WaitFor(ctx, "phase Succeeded or Failed", node.Finished)
	if err != nil {
		t.Fatal(err)
	}
	if s.Pod.Status.Phase != want {
		t.Errorf("pod phase %s, want %s", s.Pod.Status.Phase, want)
	}
	return s
}

// exitCode checks the exit code recorded for container in state s.
func exitCode(t *testing.T, s node.PodState, container string, want int) {
	t.Helper()
	got, ok := s.Pod.Terminated(container)
	switch {
	case !ok:
		t.Errorf("container %s has not terminated", container)
	case got != want:
		t.Errorf("container %s exit code %d, want %d", container, got, want)
	}
}

// fields is a log line's JSON field as text.
func field(l node.LogLine, key string) string {
	if v, ok := l.JSON[key]; ok {
		if s, ok := v.(string); ok {
			return s
		}
		b, _ := json.Marshal(v)
		return string(b)
	}
	return ""
}

// lifecycle reports the three timings of issue 9 for container main: the
// ready status seen → command started, command exit → proa exit, proa exit
// → the Pod's final phase seen.
func lifecycle(t *testing.T, p *node.Pod, main string, ready time.Time, final node.PodState) string {
	t.Helper()
	started := event(t, p, main, "app", "started")
	exited := event(t, p, main, "app", "exiting")
	proaExit := proaLine(t, p, main, "exiting")
	return fmt.Sprintf("ready status -> command started %s; command exit -> proa exit %s; proa exit -> phase %s %s",
		ms(started.Time.Sub(ready)), ms(proaExit.Time.Sub(exited.Time)), final.Pod.Status.Phase, ms(final.Seen.Sub(proaExit.Time)))
}
