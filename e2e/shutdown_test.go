package e2e

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"proa/e2e/kubelet"
)

// Shutdown in real deployments (issue 10): restarts in place, deletions,
// and an API connection that runs through the sidecar proa stops.

// Scenario 18: restartPolicy OnFailure. The command fails once: the kubelet
// restarts proa's container in place, so proa leaves the sidecar running
// (a sidecar that exited 0 is never restarted under OnFailure, and every
// retry would then fail with 69). The retry finds the sidecar ready, the
// command succeeds, proa stops the sidecar, and the Pod completes.
func TestOnFailureRetryKeepsTheSidecar(t *testing.T) {
	t.Parallel()
	once := filepath.Join(t.TempDir(), "failed-once")
	spec := proaPod(kubelet.Sidecar{}, []string{"--log-level", "debug", "-p", kubelet.URLOf("envoy", "/quit")},
		kubelet.App("fail-once", once, "1", "exit", "0"))
	spec.RestartPolicy = "OnFailure"
	p := startPod(t, spec)
	ctx := testCtx(t, 60*time.Second)
	phase, err := p.WaitFinished(ctx)
	if err != nil {
		t.Fatalf("%v; proa's exits: %v", err, codes(p.Exits("main")))
	}
	if got := codes(p.Exits("main")); fmt.Sprint(got) != "[1 0]" {
		t.Errorf("proa's container exited with %v, want [1 0]: a failure, then the retry's success", got)
	}
	if phase != "Succeeded" {
		t.Errorf("the Pod ended %s, want Succeeded", phase)
	}
	if got := codes(p.Exits("envoy")); fmt.Sprint(got) != "[0]" {
		t.Errorf("the sidecar exited with %v, want once, with 0, at the end", got)
	}
	var quits []kubelet.Event
	for _, e := range p.Events() {
		if e.Source == "envoy" && e.Msg == "quit requested" {
			quits = append(quits, e)
		}
	}
	exits := p.Exits("main")
	if len(quits) != 1 || len(exits) < 2 || quits[0].Time.Before(exits[0].At) {
		t.Errorf("quit requests at %v, want one, after the retry (proa's exits %v)", quits, exits)
	}
	if l, ok := p.FindLog("", "leaving the sidecars running: the kubelet will restart this container"); !ok || l.Attrs["restart_policy"] != "OnFailure" {
		t.Errorf("proa did not say why it left the sidecar running (%v)", l.Raw)
	}
	if len(exits) >= 2 {
		recordTiming(t, "command failed -> proa exit %s; retry: proa start -> exit %s",
			ms(exits[0].Duration()), ms(exits[1].Duration()))
	}
}

func codes(exits []kubelet.Exit) []int {
	var out []int
	for _, e := range exits {
		out = append(out, e.Code)
	}
	return out
}

// Scenario 19: the Pod is deleted while the command runs (a Job cancelled,
// a node drained). The kubelet stops every container at once and writes
// no status until all have stopped, proa's too: proa forwards the TERM,
// sends the quit request, and exits once it is answered, without waiting
// for a terminated status that cannot come before it exits.
func TestDeletionDoesNotWaitForStatuses(t *testing.T) {
	t.Parallel()
	spec := proaPod(kubelet.Sidecar{TermDelay: 500 * time.Millisecond},
		[]string{"--log-level", "debug", "-p", kubelet.URLOf("envoy", "/quit")},
		kubelet.App("trap", "TERM", "0", "sleep", "2m"))
	spec.TerminationGracePeriodSeconds = 10
	p := startPod(t, spec)
	ctx := testCtx(t, 60*time.Second)
	appEvent(t, ctx, p, "started")
	time.Sleep(300 * time.Millisecond) // the trap is set
	deleted := time.Now()
	if err := p.Delete(ctx, 10); err != nil {
		t.Fatal(err)
	}
	ex := waitExit(t, ctx, p, 0)
	if d := ex.At.Sub(deleted); d > 3*time.Second {
		t.Errorf("proa exited %s after the deletion (grace period 10 s); it waited for statuses", d)
	}
	if _, ok := p.FindEvent("envoy", "quit requested"); !ok {
		t.Errorf("the sidecar got no quit request")
	}
	if w, ok := p.FirstWrite(kubelet.Terminated("main")); ok && w.Sent.Before(ex.At) {
		t.Errorf("the kubelet wrote proa's terminated status before proa exited: the simulation is wrong")
	}
	phase, err := p.WaitFinished(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if w, _ := p.FirstWrite(kubelet.Terminated("main")); w.Containers["main"].ExitCode != 0 {
		t.Errorf("proa's container status exitCode %d, want the command's 0", w.Containers["main"].ExitCode)
	}
	recordTiming(t, "deletion (grace 10s) -> proa exit %s; pod %s", ms(ex.At.Sub(deleted)), phase)
}

// Scenario 20: a deletion with a short grace period (kubectl delete
// --grace-period=3) while proa is shutting down and one URL never answers.
// The deadline moves to a second before the deletion is due, so proa exits
// with the command's code before the kubelet's SIGKILL, not with 137.
func TestShortGracePeriodDuringShutdown(t *testing.T) {
	t.Parallel()
	spec := proaPod(kubelet.Sidecar{QuitDelay: time.Minute, TermDelay: time.Minute},
		[]string{"--log-level", "debug", "-p", kubelet.URLOf("envoy", "/quit"), "-g", hangingURL(t)},
		kubelet.App("exit", "3"))
	spec.TerminationGracePeriodSeconds = 30
	p := startPod(t, spec)
	ctx := testCtx(t, 60*time.Second)
	if _, err := p.WaitEvent(ctx, "proa", "sending shutdown requests"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.WaitEvent(ctx, "envoy", "quit requested"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	deleted := time.Now()
	if err := p.Delete(ctx, 3); err != nil {
		t.Fatal(err)
	}
	ex := waitExit(t, ctx, p, 3)
	if d := ex.At.Sub(deleted); d < time.Second || d >= 3*time.Second {
		t.Errorf("proa exited %s after a deletion with a 3 s grace period; want 1-3 s (a second before the kubelet's SIGKILL)", d)
	}
	if _, err := p.WaitFinished(ctx); err != nil {
		t.Fatal(err)
	}
	if w, _ := p.FirstWrite(kubelet.Terminated("main")); w.Containers["main"].ExitCode != 3 {
		t.Errorf("proa's container status exitCode %d, want the command's 3", w.Containers["main"].ExitCode)
	}
	recordTiming(t, "deletion with grace 3s during shutdown -> proa exit %s (code %d)", ms(ex.At.Sub(deleted)), ex.Code)
}

// Scenario 21: a service mesh. proa's API connection runs through the
// sidecar proxy it tells to quit: once the proxy has exited, the watch
// breaks and cannot come back. The stop was accepted, so proa takes the
// lost connection as the sidecar's exit and leaves, instead of retrying
// until the deadline.
func TestAPIConnectionThroughTheProxy(t *testing.T) {
	t.Parallel()
	p := startPod(t, kubelet.PodSpec{TerminationGracePeriodSeconds: 20, Containers: []kubelet.Container{
		{Name: "main", Proa: &kubelet.Proa{APIVia: "istio-proxy",
			Args:    []string{"--log-level", "debug", "-p", kubelet.URLOf("istio-proxy", "/quit")},
			Command: kubelet.App("sleep", "500ms", "exit", "0")}},
		{Name: "istio-proxy", Sidecar: &kubelet.Sidecar{ProxyAPI: true}},
	}})
	ctx := testCtx(t, 60*time.Second)
	exited := appEvent(t, ctx, p, "exiting")
	ex := waitExit(t, ctx, p, 0)
	proxy, err := p.WaitExit(ctx, "istio-proxy")
	if err != nil {
		t.Fatal(err)
	}
	if d := ex.At.Sub(exited.Time); d > 5*time.Second {
		t.Errorf("proa exited %s after the command (grace period 20 s)", d)
	}
	logLine(t, p, "API connection lost after the stop was accepted: the sidecars most likely exited")
	recordTiming(t, "command exit -> proxy exit %s -> proa exit %s", ms(proxy.At.Sub(exited.Time)), ms(ex.At.Sub(proxy.At)))
}
