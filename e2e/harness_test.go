package e2e

import (
	"path/filepath"
	"testing"
	"time"

	"proa/e2e/kubelet"
)

// A check of the harness itself, for kill-mode scenarios: with
// ShareProcessNamespace, proa, its command and the sidecar share one PID
// namespace whose PID 1 is the pause process, proa's /proc shows only that
// namespace, and the sidecar's executable has the name it was given.
func TestHarnessSharedPIDNamespace(t *testing.T) {
	t.Parallel()
	spec := proaPod(kubelet.Sidecar{Executable: "envoy"}, []string{"-p", kubelet.URLOf("envoy", "/quit")},
		kubelet.App("ps", "exit", "0"))
	spec.ShareProcessNamespace = true
	p := startPod(t, spec)
	ctx := testCtx(t, 60*time.Second)
	ps := appEvent(t, ctx, p, "ps")
	ex := waitExit(t, ctx, p, 0)
	procs, _ := ps.Fields["processes"].(map[string]any)
	self := filepath.Base(p.Executable())
	if procs["1"] != self {
		t.Errorf("PID 1 is %v, want the pause process (%s)", procs["1"], self)
	}
	names := map[any]int{}
	for _, exe := range procs {
		names[exe]++
	}
	if names["envoy"] != 1 || names["proa"] != 1 || len(procs) > 5 {
		t.Errorf("processes in the Pod's PID namespace: %v; want pause, envoy, proa and the app", procs)
	}
	t.Logf("processes seen by the command: %v; proa start -> exit %s", procs, ms(ex.Duration()))
}

// A check of the harness's restart handling: a native sidecar that keeps
// crashing is restarted (restartCount grows, state waiting CrashLoopBackOff
// in between), and proa keeps waiting for it, as SPEC section 4 says.
func TestHarnessRestarts(t *testing.T) {
	t.Parallel()
	sc := kubelet.Sidecar{NeverReady: true, ExitAfter: 300 * time.Millisecond, ExitCode: 1}
	p := startPod(t, kubelet.PodSpec{
		InitContainers: []kubelet.Container{{Name: "log-shipper", RestartPolicy: "Always", Sidecar: &sc}},
		Containers: []kubelet.Container{{Name: "main", Proa: &kubelet.Proa{
			Args: []string{"--shutdown-timeout", "2s"}, Command: kubelet.App("exit", "0")}}},
	})
	ctx := testCtx(t, 30*time.Second)
	w, err := p.WaitWrite(ctx, "two restarts", func(w kubelet.StatusWrite) bool {
		return w.Containers["log-shipper"].RestartCount >= 2
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Exits("log-shipper")) < 2 {
		t.Errorf("the sidecar's process exited %d times, want >= 2", len(p.Exits("log-shipper")))
	}
	if _, ok := p.FirstWrite(func(w kubelet.StatusWrite) bool {
		return w.Containers["log-shipper"].Reason == "CrashLoopBackOff"
	}); !ok {
		t.Errorf("no CrashLoopBackOff state was written")
	}
	if len(p.Exits("main")) > 0 || appRan(p) {
		t.Errorf("proa stopped waiting for a native sidecar that will be restarted")
	}
	t.Logf("restartCount %d after %s", w.Containers["log-shipper"].RestartCount, ms(w.Done.Sub(p.Created)))
}
