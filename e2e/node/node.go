// Package node runs a real Kubernetes node for tests: kubelet v1.34.4
// (built from the Go module proxy, cached beside kube-apiserver and etcd),
// containerd, runc and the CNI plugins from Debian's packages (installed
// when missing), with kube-apiserver and etcd, all in a network namespace
// of the test's own, in a mount namespace of its own and under a cgroup of
// its own, so that everything it made goes away with it.
//
// A test package calls Main from TestMain. Main prepares the host (packages,
// builds, the network namespace with its bridge, the cgroup), then runs the
// test binary again inside the node's namespaces, where the node starts and
// the tests run; when that ends, or is killed, it removes every process,
// mount, cgroup and namespace the node made. On a machine that cannot run a
// node (not root, no overlay file system, no cgroup v1), the tests skip with
// the reason, or fail when CI=true.
//
// There is no controller-manager, scheduler or kube-proxy: Namespace creates
// what the controllers would (the default ServiceAccount, the
// kube-root-ca.crt ConfigMap), tests set spec.nodeName, and one iptables
// DNAT rule sends the kubernetes Service's ClusterIP:443 to kube-apiserver.
package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"proa/e2e/cluster"
	"proa/e2e/harness"
	"proa/e2e/proc"
)

const envPlan = "PROA_E2E_NODE_PLAN"

// plan is what the outer process prepared for the inner one.
type plan struct {
	ID         string // proa-e2e-node-PID: names the netns, the cgroup and the directory
	Dir        string
	Netns      string // /run/netns/ID
	CgroupRoot string // /ID
	Bin        cluster.Binaries
	Proa       string // proa, built as released
	Testbin    string
	Repo       string
	Keep       bool
}

// Node is a running node with its control plane.
type Node struct {
	Cluster *cluster.Cluster
	Dir     string
	LogDir  string // the kubelet's podLogsDir: NS_NAME_UID/CONTAINER/N.log
	RootDir string // the kubelet's root directory
	// SetupTimes says how long each step of the set-up took.
	SetupTimes []string

	plan       plan
	socket     string
	containerd *process
	kubelet    *process
	images     *images
	imgMu      sync.Mutex
	imported   map[string]*imageOnce
}

var skipReason string

// Require skips the test when the machine cannot run a node, or fails it
// when CI=true.
func Require(t testing.TB) {
	t.Helper()
	if skipReason == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("the real node cannot run here, and CI=true: %s", skipReason)
	}
	t.Skipf("the real node cannot run here: %s (CI=true fails instead)", skipReason)
}

// Main runs m's tests on a real node; it returns the exit code. ready is
// called with the running node before the tests start.
func Main(m *testing.M, ready func(*Node)) int {
	if p := os.Getenv(envPlan); p != "" {
		return inner(m, p, ready)
	}
	log := os.Stderr
	if skipReason = preflight(); skipReason == "" {
		if err := ensurePackages(log); err != nil {
			skipReason = "installing Debian packages: " + err.Error()
		}
	}
	if skipReason != "" {
		fmt.Fprintln(log, "proa-e2e-node: skipping the real-node tests:", skipReason)
		return m.Run()
	}
	code, err := outer(log)
	if err != nil {
		fmt.Fprintln(log, "proa-e2e-node:", err)
		return 1
	}
	return code
}

// outer prepares the host, runs the tests inside the node's namespaces and
// cleans up.
func outer(log io.Writer) (code int, err error) {
	start := time.Now()
	sweep(log)
	p := plan{ID: idPrefix + strconv.Itoa(os.Getpid()), Keep: os.Getenv("PROA_E2E_KEEP") != ""}
	p.Netns, p.CgroupRoot = "/run/netns/"+p.ID, "/"+p.ID
	if p.Repo, err = harness.RepoRoot(); err != nil {
		return 0, err
	}
	if p.Dir, err = os.MkdirTemp("", p.ID+".*"); err != nil {
		return 0, err
	}
	var created []string
	defer func() {
		if cerr := cleanup(p, created, log); cerr != nil {
			fmt.Fprintln(log, "proa-e2e-node: clean-up:", cerr)
			if code == 0 && err == nil {
				code = 1
			}
		}
	}()
	ctx := context.Background()
	var wg sync.WaitGroup
	var binErr, proaErr, testbinErr error
	wg.Go(func() { p.Bin, binErr = cluster.EnsureNodeBinaries(ctx, cluster.CacheDir(), log) })
	wg.Go(func() { p.Proa, proaErr = buildProa(p.Repo, filepath.Join(p.Dir, "bin", "proa")) })
	wg.Go(func() { p.Testbin, testbinErr = buildTestbin(filepath.Join(p.Dir, "bin", "testbin")) })
	wg.Wait()
	if err := errors.Join(binErr, proaErr, testbinErr); err != nil {
		return 0, err
	}
	built := time.Now()
	for _, d := range hostDirs {
		if _, err := os.Stat(d); errors.Is(err, os.ErrNotExist) {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return 0, err
			}
			created = append(created, d)
		}
	}
	if err := createCgroup(p.CgroupRoot + "/node"); err != nil {
		return 0, err
	}
	if err := createNetns(p.ID); err != nil {
		return 0, err
	}
	b, _ := json.Marshal(p)
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	// nsenter enters the node's network namespace and executes the test
	// binary (same PID); the new mount namespace comes from the fork.
	cmd := exec.Command("nsenter", append([]string{"--net=" + p.Netns, "--", self}, os.Args[1:]...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), envPlan+"="+string(b),
		"PROA_E2E_NODE_HOST_SETUP="+fmt.Sprintf("build %s, host %s", built.Sub(start).Round(time.Millisecond), time.Since(built).Round(time.Millisecond)))
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	if err := proc.Start(cmd); err != nil {
		return 0, fmt.Errorf("starting the tests in the node's namespaces: %w", err)
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				cmd.Process.Signal(s) // the inner process stops the node and exits
			case <-done:
				return
			}
		}
	}()
	cmd.Wait()
	close(done)
	return proc.ExitCode(cmd.ProcessState), nil
}

// cleanup removes what the node made, whatever state the inner process
// left it in: every process in the node's cgroup (shims and containers
// included), the cgroups, the network namespace (with its iptables rules
// and bridge), the host directories created for the mount namespace, and
// the working directory.
func cleanup(p plan, created []string, log io.Writer) error {
	var errs []error
	errs = append(errs, killCgroup(p.CgroupRoot, 20*time.Second))
	if _, err := os.Stat(p.Netns); err == nil {
		errs = append(errs, run("ip", "netns", "delete", p.ID))
	}
	for _, d := range created {
		// Only if empty: another run may be using it. ip netns makes
		// /run/netns a mount point of its own, which stays after the last
		// namespace is deleted.
		if ents, err := os.ReadDir(d); err == nil && len(ents) == 0 {
			syscall.Unmount(d, syscall.MNT_DETACH)
			os.Remove(d)
		}
	}
	if p.Keep {
		fmt.Fprintln(log, "proa-e2e-node: kept", p.Dir)
	} else if err := os.RemoveAll(p.Dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// buildProa builds proa as it is released.
func buildProa(repo, out string) (string, error) {
	if p := os.Getenv("PROA_E2E_PROA"); p != "" {
		return filepath.Abs(p)
	}
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, ".")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building proa (go build -trimpath -ldflags='-s -w' in %s): %v\n%s", repo, err, b)
	}
	return out, nil
}

// buildTestbin builds the static test program of the images.
func buildTestbin(out string) (string, error) {
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, "proa/e2e/node/testbin")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the test images' program: %v\n%s", err, b)
	}
	return out, nil
}

// inner runs in the node's namespaces: it starts the node, runs the tests,
// and stops the node.
func inner(m *testing.M, planJSON string, ready func(*Node)) int {
	var p plan
	if err := json.Unmarshal([]byte(planJSON), &p); err != nil {
		fmt.Fprintln(os.Stderr, "proa-e2e-node: bad plan:", err)
		return 1
	}
	os.Unsetenv(envPlan)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := &Node{Dir: p.Dir, plan: p, imported: map[string]*imageOnce{}}
	var mu sync.Mutex // held while stopping
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "proa-e2e-node: %v: stopping the node\n", s)
		cancel()
		mu.Lock()
		n.stop()
		os.Exit(130)
	}()
	if h := os.Getenv("PROA_E2E_NODE_HOST_SETUP"); h != "" {
		n.SetupTimes = append(n.SetupTimes, h)
	}
	start := time.Now()
	err := n.start(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "proa-e2e-node: starting the node:", err)
		mu.Lock()
		n.stop()
		return 1
	}
	n.SetupTimes = append(n.SetupTimes, "node start "+time.Since(start).Round(time.Millisecond).String())
	fmt.Fprintf(os.Stderr, "proa-e2e-node: node %s Ready (kubelet %s, containerd, runc); set-up: %v\n", NodeName, cluster.KubeVersion, n.SetupTimes)
	if ready != nil {
		ready(n)
	}
	code := m.Run()
	mu.Lock()
	n.stop()
	return code
}
