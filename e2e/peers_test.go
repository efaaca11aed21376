package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"proa/e2e/kubelet"
)

// Several main containers (issue 5): containers "a" and "b" both run proa
// with --sidecar proxy, so each is the other's peer; "proxy" is the sidecar.
// Of the main containers still running, the last in the spec ("b") stops
// the proxy once the others have terminated; the others leave at once.

// twoMainsPod runs commands a and b in containers "a" and "b".
func twoMainsPod(a, b []string) kubelet.PodSpec {
	mainC := func(name string, command []string) kubelet.Container {
		return kubelet.Container{Name: name, Proa: &kubelet.Proa{Command: command, Args: []string{
			"--log-level", "debug", "--sidecar", "proxy", "--container", name,
			"-p", kubelet.URLOf("proxy", "/quit")}}}
	}
	return kubelet.PodSpec{Containers: []kubelet.Container{
		mainC("a", a), mainC("b", b),
		{Name: "proxy", Sidecar: &kubelet.Sidecar{ReadyAfter: 500 * time.Millisecond, QuitDelay: 200 * time.Millisecond}},
	}}
}

// waitMain waits for container name's proa to exit with code want, and for
// its command's "exiting" event.
func waitMain(t *testing.T, ctx context.Context, p *kubelet.Pod, name string, want int) (cmdExit kubelet.Event, ex kubelet.Exit) {
	t.Helper()
	cmdExit, err := p.WaitEvent(ctx, name+"/app", "exiting")
	if err != nil {
		t.Fatal(err)
	}
	if ex, err = p.WaitExit(ctx, name); err != nil {
		t.Fatal(err)
	}
	if ex.Code != want {
		t.Errorf("container %s: proa exited with code %d, want %d", name, ex.Code, want)
	}
	return cmdExit, ex
}

// quitRequests returns the proxy's quit requests so far.
func quitRequests(p *kubelet.Pod) []kubelet.Event {
	var out []kubelet.Event
	for _, e := range p.Events() {
		if e.Source == "proxy" && e.Msg == "quit requested" {
			out = append(out, e)
		}
	}
	return out
}

// Scenario 15: one main container finishes long before the other. The
// first to finish exits with its command's code and leaves the proxy
// running; when the other's command exits, the proxy is stopped, exits, and
// the last proa exits with its command's code. Both orders: when "a" (first
// in the spec) finishes first it leaves at once; when "b" finishes first it
// waits for "a" to terminate, then stops the proxy.
func TestTwoMainContainers(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name          string
		first, second string // first finishes after 500ms, second after 4s
	}{
		{"a-first", "a", "b"},
		{"b-first", "b", "a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cmds := map[string][]string{
				tc.first:  kubelet.App("sleep", "500ms", "exit", "3"),
				tc.second: kubelet.App("sleep", "4s", "exit", "4"),
			}
			p := startPod(t, twoMainsPod(cmds["a"], cmds["b"]))
			ctx := testCtx(t, 60*time.Second)
			firstCmd, err := p.WaitEvent(ctx, tc.first+"/app", "exiting")
			if err != nil {
				t.Fatal(err)
			}
			secondCmd, err := p.WaitEvent(ctx, tc.second+"/app", "exiting")
			if err != nil {
				t.Fatal(err)
			}
			if q := quitRequests(p); len(q) > 0 && q[0].Time.Before(secondCmd.Time) {
				t.Errorf("the proxy was told to quit at %s, while %s still ran", q[0].Time, tc.second)
			}
			if w, ok := p.FirstWrite(kubelet.Terminated("proxy")); ok && w.Sent.Before(secondCmd.Time) {
				t.Errorf("the proxy terminated while %s still ran", tc.second)
			}
			_, aExit := waitMain(t, ctx, p, "a", map[string]int{tc.first: 3, tc.second: 4}["a"])
			_, bExit := waitMain(t, ctx, p, "b", map[string]int{tc.first: 3, tc.second: 4}["b"])
			if tc.first == "a" {
				if d := aExit.At.Sub(firstCmd.Time); d > 2*time.Second {
					t.Errorf("a's proa exited %s after its command; it should leave at once, b being later in the spec", d)
				}
				if l, ok := p.FindLog("a", "a main container listed after this one is still running: it will stop the sidecars"); !ok {
					t.Errorf("a's proa did not log that it leaves the sidecars to b")
				} else if fmt.Sprint(l.Attrs["peers"]) != "[b]" {
					t.Errorf("a's proa named peers %v, want [b]", l.Attrs["peers"])
				}
			} else if _, ok := p.FindLog("b", "waiting for the other main containers before stopping the sidecars"); !ok {
				t.Errorf("b's proa, last in the spec, did not wait for a")
			}
			if _, ok := p.FindLog("a", "sending shutdown requests"); ok {
				t.Errorf("a's proa sent shutdown requests, but b is later in the spec")
			}
			q := quitRequests(p)
			if len(q) != 1 {
				t.Fatalf("the proxy got %d quit requests, want 1 (from b's proa)", len(q))
			}
			w, err := p.WaitWrite(testCtx(t, 5*time.Second), "proxy terminated", kubelet.Terminated("proxy"))
			if err != nil || w.Sent.After(bExit.At) {
				t.Fatalf("b's proa exited before the proxy's terminated status was written")
			}
			if d := bExit.At.Sub(w.Done); d > 3*time.Second {
				t.Errorf("b's proa exited %s after the proxy's terminated status; want < 3s", d)
			}
			for _, msg := range []string{"sending shutdown requests", "sidecars exited"} {
				if _, ok := p.FindLog("b", msg); !ok {
					t.Errorf("b's proa logged no %q line", msg)
				}
			}
			recordTiming(t, "%s first: %s's proa exited %s after its command; second command exit -> proxy quit %s -> b's proa exit %s",
				tc.first, tc.first, ms(map[string]time.Time{"a": aExit.At, "b": bExit.At}[tc.first].Sub(firstCmd.Time)),
				ms(q[0].Time.Sub(secondCmd.Time)), ms(bExit.At.Sub(q[0].Time)))
		})
	}
}

// Scenario 16: "a" and "b" finish close together. Each proa may see the
// other still running for a moment; the proxy must still be stopped, soon
// after the later command's exit, and both proa processes exit with their
// commands' codes.
func TestTwoMainContainersTogether(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		b    string // b's command runs this long; a's 1s
	}{
		{"500ms-apart", "1500ms"},
		{"same-time", "1s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := startPod(t, twoMainsPod(kubelet.App("sleep", "1s", "exit", "0"), kubelet.App("sleep", tc.b, "exit", "6")))
			ctx := testCtx(t, 60*time.Second)
			aCmd, aExit := waitMain(t, ctx, p, "a", 0)
			bCmd, bExit := waitMain(t, ctx, p, "b", 6)
			last := aCmd.Time
			if bCmd.Time.After(last) {
				last = bCmd.Time
			}
			// The proxy must be stopped soon after the later command's
			// exit: the time for the kubelet to report a's termination.
			limit := 5 * time.Second
			qctx, cancel := context.WithDeadline(ctx, last.Add(limit))
			defer cancel()
			quit, err := p.WaitEvent(qctx, "proxy", "quit requested")
			if err != nil {
				t.Fatalf("the proxy was never told to quit (%v): both main containers left it to the other; "+
					"a's proa exited %s and b's %s after the later command", err,
					ms(aExit.At.Sub(last)), ms(bExit.At.Sub(last)))
			}
			w, err := p.WaitWrite(qctx, "proxy terminated", kubelet.Terminated("proxy"))
			if err != nil {
				t.Fatal(err)
			}
			sent := 0
			for _, name := range []string{"a", "b"} {
				if _, ok := p.FindLog(name, "sending shutdown requests"); ok {
					sent++
				}
			}
			if sent == 0 {
				t.Errorf("neither proa logged sending shutdown requests")
			}
			if lastExit := max(aExit.At.UnixNano(), bExit.At.UnixNano()); w.Sent.UnixNano() > lastExit {
				t.Errorf("the proxy terminated only after both proa processes had exited: nobody waited for it")
			}
			phase, err := p.WaitFinished(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if phase != "Failed" { // b exits 6
				t.Errorf("Pod phase %s, want Failed (b exited 6)", phase)
			}
			recordTiming(t, "commands %s apart; later command exit -> proxy quit %s -> terminated status %s; proa exits a %s, b %s after it; %d of 2 sent requests",
				ms(bCmd.Time.Sub(aCmd.Time)), ms(quit.Time.Sub(last)), ms(w.Done.Sub(quit.Time)),
				ms(aExit.At.Sub(last)), ms(bExit.At.Sub(last)), sent)
		})
	}
}
