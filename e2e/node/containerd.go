package node

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"proa/e2e/proc"
)

// containerdConfig is containerd 1.6's configuration for the node: its own
// root, state and socket; the CRI plugin with runc on cgroupfs, the local
// pause image, and restrict_oom_score_adj (the machine's bounding set lacks
// CAP_SYS_RESOURCE: without it runc fails every sandbox with "can't get
// final child's PID from pipe: EOF").
const containerdConfig = `version = 2
root = "{{DIR}}/root"
state = "{{DIR}}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{{DIR}}/containerd.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "{{DIR}}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{{PAUSE}}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{{DIR}}/net.d"
`

// cniConfig is the Pod network: the bridge (already holding the node IP)
// and host-local addresses from the node's /24, state kept in the working
// directory.
const cniConfig = `{
  "cniVersion": "0.4.0",
  "name": "proa-e2e",
  "plugins": [{
    "type": "bridge",
    "bridge": "` + bridge + `",
    "isGateway": true,
    "ipMasq": false,
    "ipam": {
      "type": "host-local",
      "ranges": [[{"subnet": "` + PodSubnet + `", "gateway": "` + NodeIP + `"}]],
      "routes": [{"dst": "0.0.0.0/0"}],
      "dataDir": "{{DIR}}/ipam"
    }
  }]
}
`

// startContainerd writes the configuration and starts containerd in the
// node's cgroup.
func (n *Node) startContainerd(ctx context.Context) error {
	dir := filepath.Join(n.Dir, "containerd")
	if err := os.MkdirAll(filepath.Join(dir, "net.d"), 0o755); err != nil {
		return err
	}
	r := strings.NewReplacer("{{DIR}}", dir, "{{PAUSE}}", PauseImage)
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(r.Replace(containerdConfig)), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "net.d", "10-proa-e2e.conflist"), []byte(r.Replace(cniConfig)), 0o644); err != nil {
		return err
	}
	n.socket = filepath.Join(dir, "containerd.sock")
	s, err := n.startProcess("containerd", "/usr/bin/containerd", "--config", filepath.Join(dir, "config.toml"), "--log-level", "warn")
	if err != nil {
		return err
	}
	n.containerd = s
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := exec.CommandContext(ctx, "ctr", "--address", n.socket, "version").Run(); err == nil {
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("containerd exited during start-up; its log:\n%s", lastLines(readFile(s.log), 30))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd not answering after 30 s; its log:\n%s", lastLines(readFile(s.log), 30))
		}
	}
}

// importImage imports an OCI archive into the namespace the kubelet uses.
func (n *Node) importImage(ctx context.Context, archive string) error {
	out, err := exec.CommandContext(ctx, "ctr", "--address", n.socket, "-n", "k8s.io", "images", "import", archive).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ctr images import %s: %v: %s", archive, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// process is a node process this harness started.
type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

// startProcess starts a node process (logging to NAME.log) and moves it
// into the node's cgroup.
func (n *Node) startProcess(name string, args ...string) (*process, error) {
	logPath := filepath.Join(n.Dir, name+".log")
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Dir = n.Dir
	if err := proc.Start(cmd); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() { cmd.Wait(); close(p.done) }()
	if err := joinCgroup(n.plan.CgroupRoot+"/node", cmd.Process.Pid); err != nil {
		cmd.Process.Kill()
		return nil, err
	}
	return p, nil
}

func (p *process) stop(grace time.Duration) error {
	if p == nil {
		return nil
	}
	if err := proc.Stop(p.cmd.Process, p.done, grace); err != nil {
		return fmt.Errorf("stopping %s: %w", p.name, err)
	}
	return nil
}
