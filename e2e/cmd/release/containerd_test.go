package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"proa/e2e/oci"
)

// containerd imports the archive (ctr images import, as a node does) with
// every platform, and runs the host platform's image under runc: /proa
// starts, as user 65532, and prints the release's version. It uses a
// containerd of its own (socket, root and state in a temporary directory,
// no CRI), in a namespace of its own, with no cgroup for the container, so
// it leaves nothing behind; it never touches another containerd.
func TestContainerd(t *testing.T) {
	needRelease(t)
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("containerd needs root")
		}
		t.Skip("containerd needs root")
	}
	containerd := need(t, "containerd", "containerd")
	ctrPath := need(t, "ctr", "containerd")
	need(t, "runc", "runc")

	dir := t.TempDir()
	sock := filepath.Join(dir, "c.sock")
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
# No CRI, no /opt/containerd (the opt plugin), nothing this test does not use.
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.internal.v1.opt", "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = %q
[ttrpc]
  address = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc")
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	daemon := exec.Command(containerd, "--config", filepath.Join(dir, "config.toml"))
	daemon.Stdout, daemon.Stderr = logf, logf
	daemon.SysProcAttr = containerdProcAttr()
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- daemon.Wait() }()
	t.Cleanup(func() {
		daemon.Process.Signal(syscallSIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			daemon.Process.Kill()
			<-exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "containerd.log"))
			t.Logf("containerd's log:\n%s", b)
		}
	})

	ns := "proa-release-test-" + strconv.Itoa(os.Getpid())
	ctr := func(args ...string) string {
		t.Helper()
		return string(run(t, ctrPath, append([]string{"--address", sock, "--namespace", ns}, args...)...))
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if err := exec.Command(ctrPath, "--address", sock, "version").Run(); err == nil {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("containerd exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("containerd did not answer within 20 s")
		}
		time.Sleep(100 * time.Millisecond)
	}

	out := ctr("images", "import", "--all-platforms", "--snapshotter", "native", filepath.Join(dist, archiveName))
	if !strings.Contains(out, testRef) {
		t.Errorf("ctr images import printed %q, want the image name %s", out, testRef)
	}
	var platforms string
	for _, line := range strings.Split(ctr("images", "ls"), "\n") {
		if f := strings.Fields(line); len(f) >= 6 && f[0] == testRef {
			if f[1] != oci.MediaTypeIndex {
				t.Errorf("ctr images ls: %s is a %s, want an OCI index", testRef, f[1])
			}
			platforms = f[len(f)-2]
		}
	}
	for _, p := range oci.Platforms {
		if !slices.Contains(strings.Split(platforms, ","), platformString(p)) {
			t.Errorf("ctr images ls: %s has platforms %q, no %s", testRef, platforms, platformString(p))
		}
	}

	// The container spec containerd derives from the image config.
	ctr("containers", "create", "--snapshotter", "native", testRef, "proa-spec")
	var info struct {
		Spec struct {
			Process struct {
				User struct{ UID, GID int }
				Args []string
			}
		}
	}
	if err := json.Unmarshal([]byte(ctr("containers", "info", "proa-spec")), &info); err != nil {
		t.Fatal(err)
	}
	ctr("containers", "delete", "proa-spec")
	if u := info.Spec.Process.User; u.UID != 65532 || u.GID != 65532 {
		t.Errorf("the container runs as %d:%d, want 65532:65532", u.UID, u.GID)
	}
	if !slices.Equal(info.Spec.Process.Args, []string{"/proa"}) {
		t.Errorf("the container runs %q, want [/proa]", info.Spec.Process.Args)
	}

	// The host platform's image, run: no network, no cgroup (nothing to
	// clean up), runc's state and the stdio FIFOs in the temporary directory.
	out = ctr("run", "--rm", "--snapshotter", "native", "--cgroup", "",
		"--runc-root", filepath.Join(dir, "runc"), "--fifo-dir", filepath.Join(dir, "fifo"),
		testRef, "proa-version", "/proa", "--version")
	if out != "proa "+testVersion+"\n" {
		t.Errorf("/proa --version in the container printed %q, want %q", out, "proa "+testVersion+"\n")
	}
}
