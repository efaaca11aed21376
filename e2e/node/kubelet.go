package node

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"proa/e2e/cluster"
)

// kubeletUser is the kubelet's identity: a static token in group
// system:nodes, bound to the system:node ClusterRole.
const kubeletUser = "system:node:" + NodeName

// kubeletConfig holds the settings this machine needs (real-node.md):
// cgroup v1 with the cgroupfs driver (failCgroupV1: false), a cgroup root of
// the test's own, no image garbage collection (local images cannot be
// pulled again), no eviction, a stub resolv.conf, logs in the working
// directory.
const kubeletConfig = `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: {{CGROUP}}
cgroupsPerQOS: true
containerRuntimeEndpoint: unix://{{SOCKET}}
address: ` + NodeIP + `
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
authorization:
  mode: AlwaysAllow
resolvConf: {{DIR}}/resolv.conf
podLogsDir: {{DIR}}/pod-logs
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%"
  imagefs.available: "1%"
  nodefs.inodesFree: "1%"
failSwapOn: false
serializeImagePulls: false
fileCheckFrequency: 1h
staticPodPath: ""
`

const kubeconfig = `apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: {{SERVER}}
    certificate-authority-data: {{CA}}
users:
- name: kubelet
  user:
    token: {{TOKEN}}
contexts:
- name: e2e
  context: {cluster: e2e, user: kubelet}
current-context: e2e
`

// startKubelet starts the kubelet and waits until its Node is Ready.
func (n *Node) startKubelet(ctx context.Context) error {
	dir := filepath.Join(n.Dir, "kubelet")
	n.LogDir = filepath.Join(dir, "pod-logs")
	for _, d := range []string{n.LogDir, filepath.Join(dir, "root"), filepath.Join(dir, "pki")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	c := n.Cluster
	crb := cluster.Obj{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
		"metadata": cluster.Obj{"name": "proa-e2e-kubelet"},
		"roleRef":  cluster.Obj{"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:node"},
		"subjects": []cluster.Obj{{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": kubeletUser}}}
	if err := c.Do(ctx, "POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", crb, nil); err != nil {
		return fmt.Errorf("binding system:node to the kubelet: %w", err)
	}
	r := strings.NewReplacer("{{DIR}}", dir, "{{CGROUP}}", n.plan.CgroupRoot, "{{SOCKET}}", n.socket,
		"{{SERVER}}", c.URL, "{{CA}}", base64.StdEncoding.EncodeToString(c.CAPEM), "{{TOKEN}}", c.Tokens[kubeletUser])
	files := map[string]string{
		"config.yaml": r.Replace(kubeletConfig),
		"kubeconfig":  r.Replace(kubeconfig),
		"resolv.conf": "# no cluster DNS in the real-node suite\n",
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			return err
		}
	}
	s, err := n.startProcess("kubelet", n.plan.Bin.Kubelet,
		"--config="+filepath.Join(dir, "config.yaml"),
		"--kubeconfig="+filepath.Join(dir, "kubeconfig"),
		"--root-dir="+filepath.Join(dir, "root"),
		"--cert-dir="+filepath.Join(dir, "pki"),
		"--hostname-override="+NodeName,
		"--node-ip="+NodeIP,
		"--v=1")
	if err != nil {
		return err
	}
	n.kubelet = s
	n.RootDir = filepath.Join(dir, "root")
	deadline := time.Now().Add(60 * time.Second)
	for {
		if ready, _ := n.nodeReady(ctx); ready {
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("the kubelet exited during start-up; its log:\n%s", lastLines(readFile(s.log), 40))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_, why := n.nodeReady(ctx)
			return fmt.Errorf("node %s not Ready after 60 s (%s); the kubelet's log:\n%s", NodeName, why, lastLines(readFile(s.log), 40))
		}
	}
}

// nodeReady reports whether the Node shows condition Ready, and if not why.
func (n *Node) nodeReady(ctx context.Context) (bool, string) {
	var node struct {
		Status struct {
			Conditions []struct{ Type, Status, Message string }
		}
	}
	if err := n.Cluster.Do(ctx, "GET", "/api/v1/nodes/"+NodeName, nil, &node); err != nil {
		return false, err.Error()
	}
	for _, c := range node.Status.Conditions {
		if c.Type == "Ready" {
			return c.Status == "True", c.Message
		}
	}
	return false, "no Ready condition yet"
}
