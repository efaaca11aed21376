package e2e

import (
	"strings"
	"testing"
	"time"

	"proa/e2e/cluster"
	"proa/e2e/kubelet"
)

// waitWatching waits until proa logged that it waits for the sidecars, so
// its watch is open.
func waitWatching(t *testing.T, p *kubelet.Pod) {
	t.Helper()
	if _, err := p.WaitEvent(testCtx(t, 30*time.Second), "proa", "waiting for sidecars"); err != nil {
		t.Fatal(err)
	}
}

// readyAndRun makes sidecar envoy ready and checks that proa runs the
// command within limit of the ready status being written; it returns that
// delay.
func readyAndRun(t *testing.T, p *kubelet.Pod, limit time.Duration) time.Duration {
	t.Helper()
	ctx := testCtx(t, limit+30*time.Second)
	if err := p.SetReady(ctx, "envoy", true); err != nil {
		t.Fatal(err)
	}
	ready, err := p.WaitWrite(ctx, "envoy ready", kubelet.Ready("envoy"))
	if err != nil {
		t.Fatal(err)
	}
	started := appEvent(t, ctx, p, "started")
	d := started.Time.Sub(ready.Done)
	if d > limit {
		t.Errorf("the command started %s after the ready status was written; want < %s", d, limit)
	}
	return d
}

// Scenario 4: the API server is restarted while proa waits; proa recovers
// (watches again) and proceeds when the sidecar becomes ready. Not
// parallel: the restart affects every Pod.
func TestAPIServerRestart(t *testing.T) {
	p := startPod(t, proaPod(kubelet.Sidecar{NeverReady: true},
		[]string{"--log-level", "debug", "-p", kubelet.URLOf("envoy", "/quit")},
		kubelet.App("exit", "0")))
	waitWatching(t, p)
	restart := time.Now()
	p.Note("restarting kube-apiserver")
	if err := env.Cluster.RestartAPIServer(testCtx(t, 2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	down := time.Since(restart)
	p.Note("kube-apiserver ready again")
	d := readyAndRun(t, p, 35*time.Second)
	waitExit(t, testCtx(t, 60*time.Second), p, 0)
	if _, ok := p.FindEvent("envoy", "quit requested"); !ok {
		t.Errorf("shutdown did not reach the sidecar after the restart")
	}
	recordTiming(t, "API server restart took %s; ready status written -> command started %s", ms(down), ms(d))
}

// Scenario 5: the token is rotated and the old one revoked while proa
// waits; after the API server restart closes its watch, proa watches again
// with the new token and proceeds. Not parallel (restart).
func TestTokenRotation(t *testing.T) {
	spec := proaPod(kubelet.Sidecar{NeverReady: true},
		[]string{"--log-level", "debug", "-p", kubelet.URLOf("envoy", "/quit")},
		kubelet.App("exit", "0"))
	spec.TokenBoundToSecret = true
	p := startPod(t, spec)
	waitWatching(t, p)
	ctx := testCtx(t, 2*time.Minute)
	if err := p.RotateToken(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.RevokeFirstToken(ctx); err != nil {
		t.Fatal(err)
	}
	restart := time.Now()
	p.Note("restarting kube-apiserver to close proa's watch")
	if err := env.Cluster.RestartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	d := readyAndRun(t, p, 35*time.Second)
	waitExit(t, testCtx(t, 60*time.Second), p, 0)
	reqs, err := env.Cluster.AuditRequests(cluster.ServiceAccountUser(p.Namespace, p.Spec.ServiceAccount))
	if err != nil {
		t.Fatal(err)
	}
	ok := false
	for _, r := range reqs {
		if r.RequestReceived.After(restart) && r.Verb == "watch" && r.ResponseStatus.Code == 200 {
			ok = true
		}
	}
	if !ok {
		t.Errorf("no successful watch by proa after the token rotation:\n%s", describeRequests(reqs))
	}
	recordTiming(t, "after rotation + revocation + restart: ready status written -> command started %s", ms(d))
}

// Scenario 6: without RBAC every request is forbidden: proa logs an error
// naming the missing permission, keeps trying for 30 s, then exits 69
// without running the command.
func TestRBACMissing(t *testing.T) {
	t.Parallel()
	spec := proaPod(kubelet.Sidecar{},
		[]string{"--log-level", "debug", "--shutdown-timeout", "3s", "-p", kubelet.URLOf("envoy", "/quit")},
		kubelet.App("exit", "0"))
	spec.NoRBAC = true
	p := startPod(t, spec)
	ex := waitExit(t, testCtx(t, 90*time.Second), p, 69)
	if d := ex.Duration(); d < 29*time.Second || d > 40*time.Second {
		t.Errorf("proa exited after %s; want 30 s of retries plus at most the 3 s shutdown and 7 s slack", d)
	}
	if appRan(p) {
		t.Errorf("the command ran")
	}
	found := false
	for _, l := range p.ProaLogs("") {
		raw := strings.ToLower(l.Raw)
		if l.Level == "ERROR" && strings.Contains(raw, "pods") && strings.Contains(raw, "watch") {
			found = true
			break
		}
	}
	if !found {
		t.Errorf("proa logged no ERROR line naming the missing permission (pods, watch)")
	}
	recordTiming(t, "forbidden: proa start -> exit 69 %s", ms(ex.Duration()))
}

// Scenario 7: a wrong Pod name (from POD_NAME, or from the hostname) fails
// at once with exit 69 and a hint about POD_NAME; the command never runs.
func TestWrongPodName(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		proa kubelet.Proa
	}{
		{"pod-name-env", kubelet.Proa{Env: map[string]string{"POD_NAME": "no-such-pod"}}},
		{"hostname", kubelet.Proa{Hostname: "no-such-pod"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pr := tc.proa
			pr.Args = []string{"--log-level", "debug"}
			pr.Command = kubelet.App("exit", "0")
			p := startPod(t, kubelet.PodSpec{Containers: []kubelet.Container{
				{Name: "main", Proa: &pr}, {Name: "envoy", Sidecar: &kubelet.Sidecar{}}}})
			ex := waitExit(t, testCtx(t, 60*time.Second), p, 69)
			if d := ex.Duration(); d > 10*time.Second {
				t.Errorf("proa took %s to give up; want an immediate failure", d)
			}
			if appRan(p) {
				t.Errorf("the command ran")
			}
			if !strings.Contains(strings.Join(p.Logs("main"), "\n"), "POD_NAME") {
				t.Errorf("proa's output has no hint about POD_NAME")
			}
			recordTiming(t, "wrong Pod name: proa start -> exit 69 %s", ms(ex.Duration()))
		})
	}
}

// Scenario 9: a sidecar that dies before becoming ready under
// restartPolicy Never will not come back: proa exits 69 without running
// the command, promptly after the terminated status.
func TestSidecarDiesBeforeReady(t *testing.T) {
	t.Parallel()
	p := startPod(t, proaPod(kubelet.Sidecar{NeverReady: true, ExitAfter: time.Second, ExitCode: 1},
		[]string{"--log-level", "debug", "-p", kubelet.URLOf("envoy", "/quit")},
		kubelet.App("exit", "0")))
	ctx := testCtx(t, 60*time.Second)
	ex := waitExit(t, ctx, p, 69)
	if appRan(p) {
		t.Errorf("the command ran")
	}
	// The write is recorded when the kubelet has the API server's answer,
	// which may come after the watch event that let proa exit.
	w, err := p.WaitWrite(ctx, "envoy terminated", kubelet.Terminated("envoy"))
	if err != nil {
		t.Fatal(err)
	}
	if ex.At.Before(w.Sent) {
		t.Errorf("proa exited before the sidecar's terminated status was written")
	}
	d := ex.At.Sub(w.Done)
	if d > 5*time.Second {
		t.Errorf("proa exited %s after the sidecar's terminated status; want < 5s", d)
	}
	recordTiming(t, "sidecar terminated status -> proa exit 69 %s", ms(d))
}
