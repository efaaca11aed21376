package e2e

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"proa/e2e/cluster"
	"proa/e2e/kubelet"
)

// Scenario 1: a sidecar that becomes ready after a few seconds. The command
// starts only after the kubelet wrote the ready status, and promptly after.
func TestSidecarBecomesReady(t *testing.T) {
	t.Parallel()
	p := startPod(t, proaPod(kubelet.Sidecar{ReadyAfter: 3 * time.Second},
		[]string{"--log-level", "debug", "-p", kubelet.URLOf("envoy", "/quit")},
		kubelet.App("print", "hello from the command", "exit", "0")))
	ctx := testCtx(t, 60*time.Second)
	ready, err := p.WaitWrite(ctx, "envoy ready", kubelet.Ready("envoy"))
	if err != nil {
		t.Fatal(err)
	}
	started := appEvent(t, ctx, p, "started")
	ex := waitExit(t, ctx, p, 0)
	if !started.Time.After(ready.Sent) {
		t.Errorf("the command started at %s, before the ready status was written (PATCH sent %s)",
			started.Time.Format(time.StampMicro), ready.Sent.Format(time.StampMicro))
	}
	latency := started.Time.Sub(ready.Done)
	if latency > 2*time.Second {
		t.Errorf("the command started %s after the ready status was written; want < 2s", latency)
	}
	if d := started.Time.Sub(p.Started("envoy")); d < 3*time.Second {
		t.Errorf("the command started %s after the sidecar, before it could be ready (3s)", d)
	}
	logLine(t, p, "waiting for sidecars")
	logLine(t, p, "sidecars ready")
	recordTiming(t, "ready status written -> command started %s; proa start -> exit %s",
		ms(latency), ms(ex.Duration()))
}

// Scenario 10: a native sidecar (an init container with restartPolicy
// Always) is waited for; after the command exits proa does not wait for it
// to stop (the kubelet stops it only after the main containers exited).
func TestNativeSidecar(t *testing.T) {
	t.Parallel()
	sc := kubelet.Sidecar{ReadyAfter: 2 * time.Second}
	p := startPod(t, kubelet.PodSpec{
		InitContainers: []kubelet.Container{{Name: "log-shipper", RestartPolicy: "Always", Sidecar: &sc}},
		Containers: []kubelet.Container{{Name: "main", Proa: &kubelet.Proa{
			Args:    []string{"--log-level", "debug"},
			Command: kubelet.App("sleep", "500ms", "exit", "0")}}},
	})
	ctx := testCtx(t, 60*time.Second)
	ready, err := p.WaitWrite(ctx, "log-shipper ready", kubelet.Ready("log-shipper"))
	if err != nil {
		t.Fatal(err)
	}
	started := appEvent(t, ctx, p, "started")
	exited := appEvent(t, ctx, p, "exiting")
	ex := waitExit(t, ctx, p, 0)
	if !started.Time.After(ready.Sent) {
		t.Errorf("the command started before the native sidecar's ready status was written")
	}
	if d := ex.At.Sub(exited.Time); d > 3*time.Second {
		t.Errorf("proa exited %s after the command; it must not wait for the native sidecar", d)
	}
	if w, ok := p.FirstWrite(kubelet.Terminated("log-shipper")); ok && w.Sent.Before(ex.At) {
		t.Errorf("the native sidecar was terminated (status write %d) before proa exited", w.Seq)
	}
	if _, ok := p.FindEvent("log-shipper", "quit requested"); ok {
		t.Errorf("proa sent a shutdown request though none was configured")
	}
	phase, err := p.WaitFinished(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if phase != "Succeeded" {
		t.Errorf("Pod phase %s, want Succeeded", phase)
	}
	recordTiming(t, "ready status written -> command started %s; command exit -> proa exit %s",
		ms(started.Time.Sub(ready.Done)), ms(ex.At.Sub(exited.Time)))
}

// Scenario 11: a fault-free lifecycle costs proa's service account exactly
// one request, a WATCH (no LIST, no GET, no polling), read from the API
// server's audit log.
func TestAPIRequestsAudit(t *testing.T) {
	t.Parallel()
	p := startPod(t, proaPod(kubelet.Sidecar{ReadyAfter: 3 * time.Second},
		[]string{"-p", kubelet.URLOf("envoy", "/quit")},
		kubelet.App("sleep", "2s", "exit", "0")))
	ctx := testCtx(t, 60*time.Second)
	ex := waitExit(t, ctx, p, 0)
	user := cluster.ServiceAccountUser(p.Namespace, p.Spec.ServiceAccount)
	var reqs []cluster.AuditEvent
	// The watch's ResponseComplete stage is logged when the server notices
	// the stream closed; wait for every request to be complete.
	err := p.WaitFor(ctx, "audit events complete", func() bool {
		var err error
		if reqs, err = env.Cluster.AuditRequests(user); err != nil {
			t.Fatal(err)
		}
		for _, r := range reqs {
			if r.Stage != "ResponseComplete" {
				return false
			}
		}
		return len(reqs) > 0
	})
	if err != nil {
		t.Logf("requests so far: %s", describeRequests(reqs))
		t.Fatal(err)
	}
	verbs := map[string]int{}
	for _, r := range reqs {
		verbs[r.Verb]++
	}
	if len(reqs) != 1 || verbs["watch"] != 1 {
		t.Errorf("proa made %d requests (%v), want exactly one watch:\n%s", len(reqs), verbs, describeRequests(reqs))
	}
	for _, r := range reqs {
		if r.Verb != "watch" {
			continue
		}
		u, err := url.Parse(r.RequestURI)
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		if u.Path != "/api/v1/namespaces/"+p.Namespace+"/pods" || q.Get("fieldSelector") != "metadata.name="+p.Name ||
			q.Get("allowWatchBookmarks") != "true" || q.Has("resourceVersion") {
			t.Errorf("watch request %s: want pods in the Pod's namespace, fieldSelector=metadata.name=%s, "+
				"allowWatchBookmarks=true and no resourceVersion", r.RequestURI, p.Name)
		}
		if r.ResponseStatus.Code != 200 {
			t.Errorf("watch answered %d", r.ResponseStatus.Code)
		}
	}
	recordTiming(t, "%d API request(s) %v in a %s lifecycle", len(reqs), verbs, ms(ex.Duration()))
}

func describeRequests(reqs []cluster.AuditEvent) string {
	var b strings.Builder
	for _, r := range reqs {
		b.WriteString("  " + r.RequestReceived.Format("15:04:05.000") + " " + r.Verb + " " + r.RequestURI + " -> " +
			itoa(r.ResponseStatus.Code) + " (" + r.Stage + ", " + r.UserAgent + ")\n")
	}
	return b.String()
}
