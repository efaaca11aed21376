package realnode

import (
	"context"
	"strings"
	"testing"
	"time"

	"proa/e2e/cluster"
	"proa/e2e/node"
)

// Scenario 4: kill mode with shareProcessNamespace: true. The sandbox's
// process is PID 1; the sidecar "envoy" runs as uid 1337 (as istio-proxy
// does), its executable named envoy, with no quit endpoint; proa runs as
// root with the default capabilities. -k envoy stops it (SIGTERM, once);
// the decoy, another sidecar stopped by -p, gets no signal. With -K, both
// sidecars are signalled, PID 1 and proa are not.
func TestKillMode(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		args       []string
		decoySigns int
	}{
		{"k-envoy", []string{"-k", "envoy", "-p", quitURL(8081)}, 0},
		{"K", []string{"-K"}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			main := proaContainer("main", tc.args, "ps", "sleep", "1s", "exit", "0")
			main["securityContext"] = cluster.Obj{"runAsUser": 0, "runAsGroup": 0}
			envoy := sidecar("envoy", 15000, "SIDECAR_QUIT=NONE /none")
			envoy["command"] = []string{"/usr/local/bin/envoy"}
			envoy["securityContext"] = cluster.Obj{"runAsUser": 1337, "runAsGroup": 1337}
			const grace = 15
			p := startPod(t, podSpec{shareProcessNamespace: true, grace: grace, containers: []cluster.Obj{
				main, envoy, sidecar("decoy", 8081),
			}})
			ctx := testCtx(t, 60*time.Second+grace*time.Second)
			ready := waitReady(t, ctx, p, "envoy")
			exited := func() node.LogLine {
				for {
					if ev := events(p, "main", "app", "exiting"); len(ev) > 0 {
						return ev[0]
					}
					select {
					case <-ctx.Done():
						t.Fatal("the command did not run to its end")
					case <-time.After(100 * time.Millisecond):
					}
				}
			}()
			// proa's deadline is the grace period after the command: wait
			// that and 20 s more.
			fctx, cancel := context.WithDeadline(ctx, exited.Time.Add((grace+20)*time.Second))
			defer cancel()
			final, err := p.WaitFor(fctx, "phase Succeeded or Failed", node.Finished)
			if err != nil {
				t.Errorf("%v; proa's kill-mode lines: %s", err, killLines(p))
				final = p.Latest()
			} else if final.Pod.Status.Phase != "Succeeded" {
				t.Errorf("pod phase %s, want Succeeded", final.Pod.Status.Phase)
			}
			exitCode(t, final, "main", 0)
			if ps := event(t, p, "main", "app", "ps"); ps.JSON != nil {
				procs, _ := ps.JSON["processes"].(map[string]any)
				if one, _ := procs["1"].(map[string]any); one["comm"] != "pause" {
					t.Errorf("PID 1 of the Pod is %v, want the sandbox's pause process (shareProcessNamespace)", one)
				}
			}
			signals := events(p, "envoy", "envoy", "signal")
			if len(signals) != 1 || field(signals[0], "signal") != "terminated" {
				t.Errorf("the uid-1337 envoy sidecar received %d signals (%v), want exactly one SIGTERM; proa: %s", len(signals), signals, killLines(p))
			} else if !signals[0].Time.After(exited.Time) {
				t.Errorf("envoy was signalled before the command exited")
			}
			if got := len(events(p, "decoy", "decoy", "signal")); got != tc.decoySigns {
				t.Errorf("the decoy sidecar received %d signals, want %d", got, tc.decoySigns)
			}
			if len(signals) > 0 {
				proaExit := proaLine(t, p, "main", "exiting")
				recordTiming(t, "ready status -> command started %s; command exit -> envoy (uid 1337) signalled %s -> proa exit %s; proa exit -> phase %s %s",
					ms(event(t, p, "main", "app", "started").Time.Sub(ready.Seen)), ms(signals[0].Time.Sub(exited.Time)),
					ms(proaExit.Time.Sub(signals[0].Time)), final.Pod.Status.Phase, ms(final.Seen.Sub(proaExit.Time)))
			}
		})
	}
}

// killLines are proa's log lines about signalling, for failure messages.
func killLines(p *node.Pod) string {
	var out []string
	for _, l := range p.Logs("main") {
		if strings.Contains(l.Msg, "signal") || strings.Contains(l.Msg, "sidecars exited") {
			out = append(out, l.Text)
		}
	}
	return strings.Join(out, "\n  ")
}
