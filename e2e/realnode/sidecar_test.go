package realnode

import (
	"strconv"
	"testing"
	"time"

	"proa/e2e/cluster"
)

// Scenario 1: a Job with a classic sidecar that becomes Ready after 3 s and
// quits on POST: the command starts only after the sidecar is ready, the
// sidecar is told to quit (and exits), and the Pod ends with the command's
// exit code: 0 → Succeeded; 3 → Failed with main's exit code 3.
func TestClassicSidecar(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		code  int
		phase string
	}{{0, "Succeeded"}, {3, "Failed"}} {
		t.Run("exit"+strconv.Itoa(tc.code), func(t *testing.T) {
			t.Parallel()
			p := startPod(t, podSpec{containers: []cluster.Obj{
				proaContainer("main", []string{"-p", quitURL(8080)}, "sleep", "1s", "exit", strconv.Itoa(tc.code)),
				sidecar("sidecar", 8080, "SIDECAR_READY_AFTER=3s"),
			}})
			ctx := testCtx(t, 2*time.Minute)
			ready := waitReady(t, ctx, p, "sidecar")
			final := waitFinished(t, ctx, p, tc.phase)
			exitCode(t, final, "main", tc.code)
			exitCode(t, final, "sidecar", 0)
			sidecarReady := event(t, p, "sidecar", "sidecar", "ready")
			started := event(t, p, "main", "app", "started")
			if !started.Time.After(sidecarReady.Time) {
				t.Errorf("the command started at %s, before the sidecar was ready (%s)", started.Time.Format(time.StampMicro), sidecarReady.Time.Format(time.StampMicro))
			}
			exited := event(t, p, "main", "app", "exiting")
			quit := event(t, p, "sidecar", "sidecar", "quit requested")
			if field(quit, "method") != "POST" || !quit.Time.After(exited.Time) {
				t.Errorf("the sidecar's quit request: method %q at %s, want a POST after the command exited (%s)",
					field(quit, "method"), quit.Time.Format(time.StampMicro), exited.Time.Format(time.StampMicro))
			}
			recordTiming(t, "%s", lifecycle(t, p, "main", ready.Seen, final))
		})
	}
}

// Scenario 2: a native sidecar (an init container with restartPolicy
// Always and a readinessProbe) is waited for, not waited out: the command
// starts after it is ready, proa exits within 2 s of the command, before
// the kubelet stops the sidecar, and the Pod Succeeds.
func TestNativeSidecar(t *testing.T) {
	t.Parallel()
	native := sidecar("sidecar", 8080, "SIDECAR_READY_AFTER=3s")
	native["restartPolicy"] = "Always"
	p := startPod(t, podSpec{initContainers: []cluster.Obj{native}, containers: []cluster.Obj{
		proaContainer("main", nil, "sleep", "1s", "exit", "0"),
	}})
	ctx := testCtx(t, 2*time.Minute)
	ready := waitReady(t, ctx, p, "sidecar")
	final := waitFinished(t, ctx, p, "Succeeded")
	exitCode(t, final, "main", 0)
	sidecarReady := event(t, p, "sidecar", "sidecar", "ready")
	started := event(t, p, "main", "app", "started")
	if !started.Time.After(sidecarReady.Time) {
		t.Errorf("the command started before the native sidecar was ready")
	}
	exited := event(t, p, "main", "app", "exiting")
	proaExit := proaLine(t, p, "main", "exiting")
	if d := proaExit.Time.Sub(exited.Time); d > 2*time.Second {
		t.Errorf("proa exited %s after the command, want within 2s (a native sidecar is not waited for)", d)
	}
	if sig := events(p, "sidecar", "sidecar", "signal"); len(sig) == 0 {
		t.Errorf("the kubelet did not stop the native sidecar")
	} else if !sig[0].Time.After(proaExit.Time) {
		t.Errorf("the native sidecar was signalled at %s, before proa exited (%s)", sig[0].Time.Format(time.StampMicro), proaExit.Time.Format(time.StampMicro))
	}
	if len(events(p, "sidecar", "sidecar", "quit requested")) > 0 {
		t.Errorf("proa sent the native sidecar a quit request; none was configured")
	}
	recordTiming(t, "%s", lifecycle(t, p, "main", ready.Seen, final))
}

// Scenario 3: proa's container is not first in spec.containers and
// PROA_CONTAINER_NAME is unset: proa finds its container through the
// kubelet's termination-log mount in /proc/self/mountinfo, and says so.
func TestOwnContainerFromMountinfo(t *testing.T) {
	t.Parallel()
	p := startPod(t, podSpec{containers: []cluster.Obj{
		sidecar("sidecar", 8080, "SIDECAR_READY_AFTER=1s"),
		proaContainer("main", []string{"-p", quitURL(8080)}, "sleep", "1s", "exit", "0"),
	}})
	ctx := testCtx(t, 2*time.Minute)
	ready := waitReady(t, ctx, p, "sidecar")
	final := waitFinished(t, ctx, p, "Succeeded")
	exitCode(t, final, "main", 0)
	own := proaLine(t, p, "main", "own container")
	if field(own, "name") != "main" || field(own, "rule") != "mountinfo" {
		t.Errorf("proa chose its container %q by rule %q, want main by mountinfo: %s", field(own, "name"), field(own, "rule"), own.Text)
	}
	recordTiming(t, "%s", lifecycle(t, p, "main", ready.Seen, final))
}
