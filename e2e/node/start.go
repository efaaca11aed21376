package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"proa/e2e/cluster"
)

// start starts the node inside its namespaces: the mounts that keep the
// host clean, kube-apiserver and etcd (on the node IP) with the Service
// rule, containerd with the base images, then the kubelet.
func (n *Node) start(ctx context.Context) error {
	for _, d := range hostDirs {
		if err := syscall.Mount("tmpfs", d, "tmpfs", 0, "mode=755"); err != nil {
			return fmt.Errorf("mounting a tmpfs on %s in the node's mount namespace: %w", d, err)
		}
	}
	var err error
	if n.images, err = loadImageInputs(n.plan); err != nil {
		return err
	}
	var wg sync.WaitGroup
	var clusterErr, runtimeErr error
	step := func(name string, start time.Time) {
		n.SetupTimes = append(n.SetupTimes, name+" "+time.Since(start).Round(time.Millisecond).String())
	}
	var mu sync.Mutex
	wg.Go(func() {
		start := time.Now()
		dir := filepath.Join(n.Dir, "cluster")
		if clusterErr = os.MkdirAll(dir, 0o755); clusterErr != nil {
			return
		}
		n.Cluster, clusterErr = cluster.Start(ctx, cluster.Options{Dir: dir, Bin: n.plan.Bin, Log: os.Stderr,
			Address: NodeIP, ServiceAccountAdmission: true,
			StaticUsers: []cluster.StaticUser{{Name: kubeletUser, Groups: []string{"system:nodes"}}}})
		if clusterErr == nil {
			clusterErr = serviceRules("-A", n.Cluster.Port)
		}
		mu.Lock()
		step("control plane", start)
		mu.Unlock()
	})
	wg.Go(func() {
		start := time.Now()
		if runtimeErr = createCgroup(n.plan.CgroupRoot + "/node"); runtimeErr != nil {
			return
		}
		if runtimeErr = n.startContainerd(ctx); runtimeErr != nil {
			return
		}
		runtimeErr = n.addBaseImages(ctx)
		mu.Lock()
		step("containerd + images", start)
		mu.Unlock()
	})
	wg.Wait()
	if err := errors.Join(clusterErr, runtimeErr); err != nil {
		return err
	}
	start := time.Now()
	if err := n.startKubelet(ctx); err != nil {
		return err
	}
	step("kubelet to Node Ready", start)
	return nil
}

// serviceRules adds (-A) or deletes (-D) the rules that stand in for
// kube-proxy: the kubernetes Service's ClusterIP:443 goes to kube-apiserver,
// for the Pods' traffic (PREROUTING) and the node's own (OUTPUT). They live
// in the node's network namespace and go away with it.
func serviceRules(op string, port int) error {
	for _, chain := range []string{"PREROUTING", "OUTPUT"} {
		if err := run("iptables", "-w", "-t", "nat", op, chain, "-d", cluster.ServiceIP+"/32", "-p", "tcp", "--dport", "443",
			"-j", "DNAT", "--to-destination", NodeIP+":"+strconv.Itoa(port)); err != nil {
			return err
		}
	}
	return nil
}

// stop stops the node: the kubelet, every container, containerd and its
// shims, the control plane. The outer process checks and removes what is
// left.
func (n *Node) stop() {
	report := func(err error) {
		if err != nil {
			fmt.Fprintln(os.Stderr, "proa-e2e-node: stopping:", err)
		}
	}
	report(n.kubelet.stop(10 * time.Second))
	report(killCgroup(n.plan.CgroupRoot+"/kubepods", 20*time.Second))
	report(n.containerd.stop(10 * time.Second))
	report(killCgroup(n.plan.CgroupRoot+"/node", 10*time.Second))
	if n.Cluster != nil {
		report(serviceRules("-D", n.Cluster.Port))
		n.Cluster.Stop()
	}
}
