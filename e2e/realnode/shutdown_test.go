package realnode

import (
	"testing"
	"time"

	"proa/e2e/cluster"
	"proa/e2e/node"
)

// Scenario 5: the Pod is deleted while the command runs, with the Pod's
// grace period, and again with a shorter --grace-period and a sidecar slow
// to quit. The command gets SIGTERM (and exits 7 for it); the main
// container's recorded exit code is the command's, never 137. While the Pod
// is being deleted the kubelet writes no container state until every
// container has stopped, so proa must not wait for the sidecar's status: it
// sends the quit request, which the sidecar answers at once (the slow one
// exits 3 s later), and exits within 2 s of the command; and never after the
// deletion's deadline (its deletionTimestamp).
func TestDeletion(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		podGrace    int
		deleteGrace int // -1: the Pod's
		sidecarEnv  []string
	}{
		// The kubelet sends SIGTERM to every container at once: this
		// sidecar drains for 1 s on it (as Envoy does), so it is there to
		// answer proa's quit request, and then quits at once.
		{"pod-grace", 20, -1, []string{"SIDECAR_TERM_DELAY=1s"}},
		{"short-grace-slow-sidecar", 30, 5, []string{"SIDECAR_QUIT_DELAY=3s", "SIDECAR_TERM_DELAY=3s"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := startPod(t, podSpec{grace: tc.podGrace, containers: []cluster.Obj{
				proaContainer("main", []string{"-p", quitURL(8080)}, "trap", "TERM", "7", "sleep", "2m"),
				sidecar("sidecar", 8080, append([]string{"SIDECAR_READY_AFTER=1s"}, tc.sidecarEnv...)...),
			}})
			ctx := testCtx(t, 90*time.Second)
			waitReady(t, ctx, p, "sidecar")
			for len(events(p, "main", "app", "started")) == 0 {
				select {
				case <-ctx.Done():
					t.Fatal("the command did not start")
				case <-time.After(100 * time.Millisecond):
				}
			}
			deleted := time.Now()
			if err := p.Delete(ctx, tc.deleteGrace); err != nil {
				t.Fatal(err)
			}
			if err := p.WaitGone(ctx); err != nil {
				t.Fatal(err)
			}
			final := p.Latest()
			exitCode(t, final, "main", 7)
			sig := event(t, p, "main", "app", "signal")
			if field(sig, "signal") != "terminated" {
				t.Errorf("the command got %q, want SIGTERM", field(sig, "signal"))
			}
			exited := event(t, p, "main", "app", "exiting")
			proaExit := proaLine(t, p, "main", "exiting")
			took := proaExit.Time.Sub(exited.Time)
			if took > 2*time.Second {
				t.Errorf("proa exited %s after the command, want within 2s: the sidecar had answered its quit request; proa must not wait for statuses the kubelet writes only after proa's exit", took.Round(time.Millisecond))
			}
			if tc.deleteGrace > 0 {
				if limit := deleted.Add(time.Duration(tc.deleteGrace) * time.Second); proaExit.Time.After(limit) {
					t.Errorf("proa exited %s after the deletion, after its deadline (deletionTimestamp, %ds after the deletion)", proaExit.Time.Sub(deleted).Round(time.Millisecond), tc.deleteGrace)
				}
			}
			recordTiming(t, "delete -> command SIGTERM %s; command exit -> proa exit %s; proa exit -> Pod gone %s",
				ms(sig.Time.Sub(deleted)), ms(took), ms(final.Seen.Sub(proaExit.Time)))
		})
	}
}

// Scenario 6: restartPolicy OnFailure. The command fails once (state in an
// emptyDir), the kubelet restarts proa's container in place, the sidecar
// keeps running across the restart (no quit request until the command
// succeeds), the second run starts without waiting, and the Pod Succeeds.
func TestOnFailureRestart(t *testing.T) {
	t.Parallel()
	main := proaContainer("main", []string{"-p", quitURL(8080)}, "fail-once", "/state/failed", "1", "sleep", "1s", "exit", "0")
	main["volumeMounts"] = []cluster.Obj{{"name": "state", "mountPath": "/state"}}
	p := startPod(t, podSpec{restartPolicy: "OnFailure", grace: 15,
		volumes:    []cluster.Obj{{"name": "state", "emptyDir": cluster.Obj{}}},
		containers: []cluster.Obj{main, sidecar("sidecar", 8080, "SIDECAR_READY_AFTER=2s")},
	})
	ctx := testCtx(t, 90*time.Second)
	ready := waitReady(t, ctx, p, "sidecar")
	// A second failed run means the retry is broken: no need to wait for
	// the kubelet's growing back-off.
	final, err := p.WaitFor(ctx, "phase Succeeded or Failed, or a second restart", func(o node.PodObj) bool {
		c, _ := o.Container("main")
		return node.Finished(o) || c.RestartCount >= 2
	})
	if err != nil {
		t.Errorf("%v; the main container's exit codes: %v", err, exitCodes(p, "main"))
		final = p.Latest()
	} else if !node.Finished(final.Pod) {
		t.Errorf("the main container was restarted twice without the Pod finishing; its exit codes: %v", exitCodes(p, "main"))
	} else if final.Pod.Status.Phase != "Succeeded" {
		t.Errorf("pod phase %s, want Succeeded", final.Pod.Status.Phase)
	}
	if codes := exitCodes(p, "main"); len(codes) != 2 || codes[0] != 1 || codes[1] != 0 {
		t.Errorf("the main container's runs exited with %v, want [1 0]", codes)
	}
	if c, _ := final.Pod.Container("sidecar"); c.RestartCount != 0 {
		t.Errorf("the sidecar restarted %d times, want 0", c.RestartCount)
	}
	starts := events(p, "main", "app", "started")
	quits := events(p, "sidecar", "sidecar", "quit requested")
	if len(starts) < 2 {
		t.Fatalf("the command ran %d times, want 2", len(starts))
	}
	for _, q := range quits {
		if q.Time.Before(starts[1].Time) {
			t.Errorf("the sidecar was told to quit at %s, before the second run (%s): a restarted container would find it gone", q.Time.Format(time.StampMicro), starts[1].Time.Format(time.StampMicro))
		}
	}
	if len(quits) != 1 {
		t.Errorf("the sidecar got %d quit requests, want 1 (after the run that succeeded)", len(quits))
	}
	var second node.LogLine
	for _, l := range proaLines(p, "main", "starting") {
		if l.Restart == 1 {
			second = l
		}
	}
	if second.Time.IsZero() {
		t.Errorf("no log of proa's second run")
	} else if d := starts[1].Time.Sub(second.Time); d > 2*time.Second {
		t.Errorf("the second run started %s after proa did, want within 2s (the sidecar was ready all along)", d.Round(time.Millisecond))
	}
	firstExit := events(p, "main", "app", "exiting")[0]
	recordTiming(t, "ready status -> first run %s; first exit -> second proa start %s (the kubelet's restart) -> second command %s; %s",
		ms(starts[0].Time.Sub(ready.Seen)), ms(second.Time.Sub(firstExit.Time)), ms(starts[1].Time.Sub(second.Time)),
		lifecycleLast(t, p, "main", final))
}

// exitCodes lists container's exit codes, one per run, as the kubelet
// recorded them (lastState, then state).
func exitCodes(p *node.Pod, container string) []int {
	var codes []int
	seen := map[int]bool{}
	for _, s := range p.States() {
		c, ok := s.Pod.Container(container)
		if !ok {
			continue
		}
		if t := c.LastState.Terminated; t != nil && !seen[c.RestartCount-1] {
			seen[c.RestartCount-1] = true
			codes = append(codes, t.ExitCode)
		}
		if t := c.State.Terminated; t != nil && !seen[c.RestartCount] {
			seen[c.RestartCount] = true
			codes = append(codes, t.ExitCode)
		}
	}
	return codes
}

// lifecycleLast is command exit -> proa exit -> phase for the last run.
func lifecycleLast(t *testing.T, p *node.Pod, main string, final node.PodState) string {
	exits := events(p, main, "app", "exiting")
	proaExits := proaLines(p, main, "exiting")
	if len(exits) == 0 || len(proaExits) == 0 {
		return "no exit logged"
	}
	e, pe := exits[len(exits)-1], proaExits[len(proaExits)-1]
	return "command exit -> proa exit " + ms(pe.Time.Sub(e.Time)) + "; proa exit -> phase " + final.Pod.Status.Phase + " " + ms(final.Seen.Sub(pe.Time))
}

// Scenario 7: a mesh-like sidecar carries proa's API connection: a TCP
// proxy (uid 1337, as istio-proxy) to the API server that exits on
// /quitquitquit. proa reaches the API only through it (its
// KUBERNETES_SERVICE_HOST/PORT point at the proxy, as traffic capture would
// send them), so the watch breaks when the proxy quits: proa must exit
// within 2 s of that, not at its deadline.
func TestMeshProxy(t *testing.T) {
	t.Parallel()
	main := proaContainer("main", []string{"-p", "http://127.0.0.1:15020/quitquitquit"}, "sleep", "1s", "exit", "0")
	main["env"] = []cluster.Obj{{"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"}, {"name": "KUBERNETES_SERVICE_PORT", "value": "15443"}}
	mesh := cluster.Obj{"name": "istio-proxy", "image": node.SidecarImage, "imagePullPolicy": "Never", "command": []string{"/mesh"},
		"securityContext": cluster.Obj{"runAsUser": 1337, "runAsGroup": 1337},
		"readinessProbe":  cluster.Obj{"httpGet": cluster.Obj{"path": "/healthz/ready", "port": 15020}, "periodSeconds": 1}}
	p := startPod(t, podSpec{grace: 20, containers: []cluster.Obj{main, mesh}})
	ctx := testCtx(t, 90*time.Second)
	ready := waitReady(t, ctx, p, "istio-proxy")
	final := waitFinished(t, ctx, p, "Succeeded")
	exitCode(t, final, "main", 0)
	if len(events(p, "istio-proxy", "mesh", "proxying")) == 0 {
		t.Errorf("proa's API connection did not go through the proxy")
	}
	meshExit := event(t, p, "istio-proxy", "mesh", "exiting")
	proaExit := proaLine(t, p, "main", "exiting")
	if d := proaExit.Time.Sub(meshExit.Time); d > 2*time.Second {
		t.Errorf("proa exited %s after the proxy that carried its API connection, want within 2s", d.Round(time.Millisecond))
	}
	recordTiming(t, "%s; proxy exit -> proa exit %s", lifecycle(t, p, "main", ready.Seen, final), ms(proaExit.Time.Sub(meshExit.Time)))
}
