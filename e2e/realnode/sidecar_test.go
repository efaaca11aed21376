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
