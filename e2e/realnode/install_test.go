package realnode

import (
	"testing"
	"time"

	"proa/e2e/cluster"
	"proa/e2e/node"
)

// Scenario 8: --install. An init container from proa's own image (as users
// get it: user 65532, entrypoint /proa) copies proa into an emptyDir; the
// application's image, which has no proa, runs it from there.
func TestInstall(t *testing.T) {
	t.Parallel()
	mount := []cluster.Obj{{"name": "proa", "mountPath": "/opt/proa"}}
	p := startPod(t, podSpec{
		volumes: []cluster.Obj{{"name": "proa", "emptyDir": cluster.Obj{}}},
		initContainers: []cluster.Obj{{"name": "install", "image": node.ProaImage, "imagePullPolicy": "Never",
			"args": []string{"--install", "/opt/proa"}, "volumeMounts": mount}},
		containers: []cluster.Obj{
			{"name": "main", "image": node.AppImage, "imagePullPolicy": "Never", "volumeMounts": mount,
				"command": []string{"/opt/proa/proa", "-p", quitURL(8080), "--", "/app", "sleep", "1s", "exit", "0"}},
			sidecar("sidecar", 8080, "SIDECAR_READY_AFTER=2s"),
		},
	})
	ctx := testCtx(t, 2*time.Minute)
	ready := waitReady(t, ctx, p, "sidecar")
	final := waitFinished(t, ctx, p, "Succeeded")
	exitCode(t, final, "install", 0)
	exitCode(t, final, "main", 0)
	if started := event(t, p, "main", "app", "started"); !started.Time.After(event(t, p, "sidecar", "sidecar", "ready").Time) {
		t.Errorf("the command started before the sidecar was ready")
	}
	event(t, p, "sidecar", "sidecar", "quit requested")
	recordTiming(t, "%s", lifecycle(t, p, "main", ready.Seen, final))
}
