package e2e

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"proa/e2e/kubelet"
)

// Scenario 2: proa exits with the command's code: 0, 3, 137 when the command
// is killed by SIGKILL, 127 when it cannot be executed. The kubelet records
// the same code in proa's container status, and shutdown runs in every case.
func TestExitCodes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		command []string
		want    int
	}{
		{"exit-0", kubelet.App("exit", "0"), 0},
		{"exit-3", kubelet.App("exit", "3"), 3},
		{"sigkill", kubelet.App("kill", "KILL"), 137},
		{"not-found", []string{"/nonexistent/command", "arg"}, 127},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := startPod(t, proaPod(kubelet.Sidecar{},
				[]string{"--log-level", "debug", "-p", kubelet.URLOf("envoy", "/quit")}, tc.command))
			ctx := testCtx(t, 60*time.Second)
			ex := waitExit(t, ctx, p, tc.want)
			w, err := p.WaitWrite(ctx, "main terminated", kubelet.Terminated("main"))
			if err != nil {
				t.Fatal(err)
			}
			if got := w.Containers["main"].ExitCode; got != tc.want {
				t.Errorf("container status exitCode %d, want %d", got, tc.want)
			}
			if _, err := p.WaitEvent(ctx, "envoy", "quit requested"); err != nil {
				t.Errorf("shutdown did not reach the sidecar: %v", err)
			}
			if l, ok := p.FindLog("", "exiting"); ok && fmt.Sprint(l.Attrs["code"]) != fmt.Sprint(tc.want) {
				t.Errorf(`proa logged "exiting" with code %v, want %d`, l.Attrs["code"], tc.want)
			}
			recordTiming(t, "exit %d, proa start -> exit %s", ex.Code, ms(ex.Duration()))
		})
	}
}

// Scenario 3: at shutdown -p and -g reach the sidecars' quit endpoints, the
// sidecars exit, their terminated status arrives, and proa exits with the
// command's code. Extra URLs that refuse connections or never answer change
// nothing: proa does not wait for them once the sidecars are gone.
func TestShutdownRequests(t *testing.T) {
	t.Parallel()
	envoy := kubelet.Sidecar{QuitDelay: 300 * time.Millisecond}
	agent := kubelet.Sidecar{QuitCode: 0}
	p := startPod(t, kubelet.PodSpec{Containers: []kubelet.Container{
		{Name: "main", Proa: &kubelet.Proa{
			Args: []string{"--log-level", "debug",
				"-p", kubelet.URLOf("envoy", "/quit"),
				"-g", kubelet.URLOf("agent", "/quit"),
				"-p", closedPortURL(t),
				"-g", hangingURL(t)},
			Command: kubelet.App("sleep", "200ms", "exit", "5")}},
		{Name: "envoy", Sidecar: &envoy},
		{Name: "agent", Sidecar: &agent},
	}})
	ctx := testCtx(t, 60*time.Second)
	exited := appEvent(t, ctx, p, "exiting")
	ex := waitExit(t, ctx, p, 5)
	var last time.Time
	for name, method := range map[string]string{"envoy": "POST", "agent": "GET"} {
		q, ok := p.FindEvent(name, "quit requested")
		if !ok {
			t.Errorf("sidecar %s got no quit request", name)
			continue
		}
		if q.Fields["method"] != method {
			t.Errorf("sidecar %s: quit request method %v, want %s", name, q.Fields["method"], method)
		}
		if !q.Time.After(exited.Time) {
			t.Errorf("sidecar %s was told to quit before the command exited", name)
		}
		// Recorded once its PATCH is answered, maybe after proa saw it and
		// exited: wait for the record, then compare when it was sent.
		w, err := p.WaitWrite(testCtx(t, 5*time.Second), name+" terminated", kubelet.Terminated(name))
		if err != nil {
			t.Errorf("sidecar %s: no terminated status: %v", name, err)
			continue
		}
		if w.Sent.After(ex.At) {
			t.Errorf("proa exited before sidecar %s's terminated status was written", name)
		}
		if w.Done.After(last) {
			last = w.Done
		}
	}
	if !last.IsZero() {
		if d := ex.At.Sub(last); d > 3*time.Second {
			t.Errorf("proa exited %s after the last sidecar's terminated status; the dead URLs held it up", d)
		}
	}
	logLine(t, p, "sending shutdown requests")
	logLine(t, p, "sidecars exited")
	recordTiming(t, "command exit -> proa exit %s (sidecars terminated -> proa exit %s)",
		ms(ex.At.Sub(exited.Time)), ms(ex.At.Sub(last)))
}

// Scenario 8: SIGTERM to proa while the command runs is forwarded to the
// command; proa's exit code follows the command's: its own code when it
// handles the signal, 143 when it dies of it.
func TestSIGTERMForwarded(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		command []string
		want    int
	}{
		{"handled", kubelet.App("trap", "TERM", "7", "sleep", "2m"), 7},
		{"default", kubelet.App("sleep", "2m"), 143},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := startPod(t, proaPod(kubelet.Sidecar{},
				[]string{"--log-level", "debug", "-p", kubelet.URLOf("envoy", "/quit")}, tc.command))
			ctx := testCtx(t, 60*time.Second)
			appEvent(t, ctx, p, "started")
			sent := time.Now()
			if err := p.Signal("main", syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			ex := waitExit(t, ctx, p, tc.want)
			if tc.want == 7 {
				sig, ok := p.FindEvent("main/app", "signal")
				if !ok || sig.Fields["signal"] != "terminated" {
					t.Errorf("the command did not receive SIGTERM (event %+v)", sig)
				}
			}
			if _, ok := p.FindEvent("envoy", "quit requested"); !ok {
				t.Errorf("shutdown did not reach the sidecar")
			}
			recordTiming(t, "SIGTERM -> proa exit %s", ms(ex.At.Sub(sent)))
		})
	}
}
