package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"proa/e2e/kubelet"
)

// Kill mode (issue 4): proa and its sidecars share the Pod's PID namespace
// (spec.shareProcessNamespace), and proa stops sidecars that have no quit
// endpoint with a signal. A process with the same executable name runs
// outside the Pod's namespace the whole time: it must never be signalled.

// killPod is a Pod with a shared PID namespace: container "main" runs proa
// with args; its command records the processes it sees ("ps"), waits for
// the test to create gate, and exits with code.
func killPod(args []string, gate string, code int, sidecars ...kubelet.Container) kubelet.PodSpec {
	return kubelet.PodSpec{ShareProcessNamespace: true, Containers: append([]kubelet.Container{
		{Name: "main", Proa: &kubelet.Proa{Args: append([]string{"--log-level", "debug", "--shutdown-timeout", "10s"}, args...),
			Command: kubelet.App("ps", "wait-file", gate, "exit", itoa(code))}},
	}, sidecars...)}
}

// killRun is what a kill-mode Pod did, collected once proa has exited.
type killRun struct {
	procs    map[int]string // PID → executable, as the command saw them (the Pod's namespace)
	proaPID  int            // proa's PID in the Pod's namespace
	exited   kubelet.Event  // the command's "exiting" event
	proa     kubelet.Exit
	signaled map[int]string // PID → exe from proa's "signalled process" lines
}

// runKillPod starts spec with an outsider named outsideExe, lets the
// command finish, and waits for proa to exit with code.
func runKillPod(t *testing.T, spec kubelet.PodSpec, gate, outsideExe string, code int) (*kubelet.Pod, *kubelet.Outsider, killRun) {
	t.Helper()
	p := startPod(t, spec)
	out, err := p.StartOutside("outsider", outsideExe, "trap", "TERM", "9", "trap", "INT", "9", "sleep", "2m")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(out.Stop)
	ctx := testCtx(t, 60*time.Second)
	if _, err := p.WaitEvent(ctx, "outsider/app", "started"); err != nil {
		t.Fatal(err)
	}
	var r killRun
	ps := appEvent(t, ctx, p, "ps")
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r.exited = appEvent(t, ctx, p, "exiting")
	r.proa = waitExit(t, ctx, p, code)
	r.procs = map[int]string{}
	m, _ := ps.Fields["processes"].(map[string]any)
	for pid, exe := range m {
		var n int
		fmt.Sscan(pid, &n)
		r.procs[n], _ = exe.(string)
		if exe == filepath.Base(env.Proa) {
			r.proaPID = n
		}
	}
	if r.proaPID == 0 {
		t.Errorf("no proa process in the command's view of the Pod's PID namespace: %v", r.procs)
	}
	r.signaled = map[int]string{}
	for _, l := range p.ProaLogs("") {
		if l.Level == "ERROR" {
			t.Errorf("proa logged an error: %s", l.Raw)
		}
		if l.Msg == "signalled process" {
			pid, _ := l.Attrs["pid"].(float64)
			if _, dup := r.signaled[int(pid)]; dup {
				t.Errorf("proa signalled PID %v more than once", pid)
			}
			r.signaled[int(pid)] = fmt.Sprint(l.Attrs["exe"])
		}
	}
	return p, out, r
}

// sidecarPID is the PID sidecar name reported when it started (in the Pod's
// PID namespace).
func sidecarPID(t *testing.T, p *kubelet.Pod, name string) int {
	t.Helper()
	e, ok := p.FindEvent(name, "started")
	if !ok {
		t.Fatalf("sidecar %s recorded no start", name)
	}
	pid, _ := e.Fields["pid"].(float64)
	return int(pid)
}

// signals returns the signals sidecar name recorded receiving.
func signals(p *kubelet.Pod, name string) []kubelet.Event {
	var out []kubelet.Event
	for _, e := range p.Events() {
		if e.Source == name && e.Msg == "signal" {
			out = append(out, e)
		}
	}
	return out
}

// checkSignalledOnce checks that sidecar name received exactly one signal,
// sig, after the command exited, and that its terminated status with code
// was written before proa exited. It returns when the status was written.
func checkSignalledOnce(t *testing.T, p *kubelet.Pod, r killRun, name, sig string, code int) time.Time {
	t.Helper()
	if sig != "" {
		got := signals(p, name)
		if len(got) != 1 || got[0].Fields["signal"] != sig {
			t.Errorf("sidecar %s received signals %v, want exactly one %s", name, got, sig)
		} else if !got[0].Time.After(r.exited.Time) {
			t.Errorf("sidecar %s was signalled before the command exited", name)
		}
	}
	// A write is recorded once its PATCH has been answered, which can be
	// after proa, watching, has seen it and exited: wait for the record, and
	// compare when it was sent.
	w, err := p.WaitWrite(testCtx(t, 5*time.Second), name+" terminated", kubelet.Terminated(name))
	switch {
	case err != nil:
		t.Errorf("sidecar %s: no terminated status: %v", name, err)
		return time.Time{}
	case w.Sent.After(r.proa.At):
		t.Errorf("proa exited before sidecar %s's terminated status was written", name)
	case w.Containers[name].ExitCode != code:
		t.Errorf("sidecar %s terminated with code %d, want %d", name, w.Containers[name].ExitCode, code)
	}
	return w.Done
}

// checkContained checks that nothing outside the Pod's set of sidecars was
// signalled: the pause process (PID 1 of the Pod's namespace) still runs,
// and so does the outsider, which has a sidecar's executable name.
func checkContained(t *testing.T, p *kubelet.Pod, out *kubelet.Outsider) {
	t.Helper()
	if e, ok := p.FindEvent("kubelet", "pause process exited"); ok {
		t.Errorf("the Pod's PID 1 (pause) exited while the Pod ran: %s", e.Msg)
	}
	if done, code := out.Exited(); done {
		t.Errorf("the process named %s outside the Pod's PID namespace exited (code %d): proa reached outside its Pod", out.Exe, code)
	}
	if e, ok := p.FindEvent("outsider/app", "signal"); ok {
		t.Errorf("the process named %s outside the Pod's PID namespace was signalled: %v", out.Exe, e)
	}
}

// Scenario 13: -k NAME stops the sidecar whose executable is NAME and that
// has no quit endpoint: it receives SIGTERM once, exits, its terminated
// status is written, and proa exits with the command's code. Another
// sidecar, stopped by -p, is not signalled; neither is PID 1, nor a process
// with the same name outside the Pod.
func TestKillByName(t *testing.T) {
	t.Parallel()
	gate := filepath.Join(t.TempDir(), "go")
	spec := killPod([]string{"-k", "envoy", "-p", kubelet.URLOf("agent", "/quit")}, gate, 3,
		kubelet.Container{Name: "envoy", Sidecar: &kubelet.Sidecar{Executable: "envoy", TermCode: 143,
			TermDelay: 500 * time.Millisecond}},
		kubelet.Container{Name: "agent", Sidecar: &kubelet.Sidecar{Executable: "fluent-bit"}})
	p, out, r := runKillPod(t, spec, gate, "envoy", 3)
	envoy := sidecarPID(t, p, "envoy")
	if r.procs[envoy] != "envoy" {
		t.Errorf("the command saw PID %d as %q, want the envoy sidecar", envoy, r.procs[envoy])
	}
	if want := map[int]string{envoy: "envoy"}; fmt.Sprint(r.signaled) != fmt.Sprint(want) {
		t.Errorf("proa signalled %v, want only the envoy sidecar %v", r.signaled, want)
	}
	done := checkSignalledOnce(t, p, r, "envoy", "terminated", 143)
	if e, ok := p.FindEvent("envoy", "exiting"); !ok || e.Fields["why"] != "signal terminated" {
		t.Errorf("the envoy sidecar did not exit because of the signal (event %v)", e)
	}
	if _, ok := p.FindEvent("envoy", "quit requested"); ok {
		t.Errorf("the envoy sidecar got an HTTP quit request; none was configured")
	}
	if got := signals(p, "agent"); len(got) > 0 {
		t.Errorf("the agent sidecar (executable fluent-bit, not named by -k) was signalled: %v", got)
	}
	if _, ok := p.FindEvent("agent", "quit requested"); !ok {
		t.Errorf("the agent sidecar got no quit request")
	}
	checkSignalledOnce(t, p, r, "agent", "", 0)
	checkContained(t, p, out)
	if w, err := p.WaitWrite(testCtx(t, 10*time.Second), "main terminated", kubelet.Terminated("main")); err != nil {
		t.Error(err)
	} else if got := w.Containers["main"].ExitCode; got != 3 {
		t.Errorf("main container status exitCode %d, want 3", got)
	}
	logLine(t, p, "signalled processes exited")
	logLine(t, p, "sidecars exited")
	sig := signals(p, "envoy")
	if len(sig) > 0 && !done.IsZero() {
		recordTiming(t, "command exit -> sidecar signalled %s -> terminated status %s (500ms drain) -> proa exit %s",
			ms(sig[0].Time.Sub(r.exited.Time)), ms(done.Sub(sig[0].Time)), ms(r.proa.At.Sub(done)))
	}
}

// Scenario 14: -K signals every process of the Pod's PID namespace except
// PID 1, proa itself and its descendants: both sidecars, once each. With
// the default TERM, a signalled PID 1 (pause) would end the whole
// namespace; with KILL, a proa that signalled itself would exit 137 instead
// of the command's code.
func TestKillAll(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, signal, received string
		code                   int // the sidecars' exit code
	}{
		{"TERM", "", "terminated", 0},
		{"KILL", "KILL", "", 137},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := []string{"-K"}
			if tc.signal != "" {
				args = append(args, "--kill-signal", tc.signal)
			}
			gate := filepath.Join(t.TempDir(), "go")
			spec := killPod(args, gate, 5,
				kubelet.Container{Name: "envoy", Sidecar: &kubelet.Sidecar{Executable: "envoy", TermDelay: 300 * time.Millisecond}},
				kubelet.Container{Name: "agent", Sidecar: &kubelet.Sidecar{TermDelay: 300 * time.Millisecond}})
			p, out, r := runKillPod(t, spec, gate, "envoy", 5)
			envoy, agent := sidecarPID(t, p, "envoy"), sidecarPID(t, p, "agent")
			var pids []int
			for pid := range r.signaled {
				pids = append(pids, pid)
			}
			sort.Ints(pids)
			want := []int{envoy, agent}
			sort.Ints(want)
			if fmt.Sprint(pids) != fmt.Sprint(want) {
				t.Errorf("proa signalled PIDs %v (%v), want exactly the sidecars %v; the Pod's processes: %v",
					pids, r.signaled, want, r.procs)
			}
			if _, ok := r.signaled[1]; ok {
				t.Errorf("proa signalled PID 1")
			}
			if _, ok := r.signaled[r.proaPID]; ok {
				t.Errorf("proa signalled itself (PID %d)", r.proaPID)
			}
			var last time.Time
			for _, name := range []string{"envoy", "agent"} {
				if d := checkSignalledOnce(t, p, r, name, tc.received, tc.code); d.After(last) {
					last = d
				}
			}
			checkContained(t, p, out)
			logLine(t, p, "signalled processes exited")
			if !last.IsZero() {
				recordTiming(t, "-K %s: command exit -> both sidecars terminated %s -> proa exit %s",
					tc.name, ms(last.Sub(r.exited.Time)), ms(r.proa.At.Sub(last)))
			}
		})
	}
}
