// Tests of proa in real Pods under a real kubelet (package node: kubelet
// v1.34.4, containerd, runc, CNI, kube-apiserver and etcd, in namespaces of
// the test's own). Each scenario of issue 9 runs in its own namespace, in
// parallel with the others. There is no controller-manager or scheduler:
// the test plays the Job controller, creating each Pod from a Job-like
// template with spec.nodeName set.
//
//	cd e2e && go test -count=1 -v ./realnode
package realnode

import (
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"proa/e2e/cluster"
	"proa/e2e/node"
)

var (
	nd       *node.Node
	timingMu sync.Mutex
	timings  []string
)

func TestMain(m *testing.M) {
	// The scenarios mostly wait for the kubelet: run them all at once
	// (unless -parallel says otherwise), not GOMAXPROCS at a time.
	flag.Parse()
	parallelSet := false
	flag.Visit(func(f *flag.Flag) { parallelSet = parallelSet || f.Name == "test.parallel" })
	if !parallelSet {
		flag.Set("test.parallel", "16")
	}
	code := node.Main(m, func(n *node.Node) { nd = n })
	if len(timings) > 0 {
		sort.Strings(timings)
		fmt.Printf("\nproa-e2e real-node timings (kubelet %s, containerd, runc):\n  set-up: %s\n  %s\n",
			cluster.KubeVersion, strings.Join(nd.SetupTimes, ", "), strings.Join(timings, "\n  "))
	}
	os.Exit(code)
}

// recordTiming logs a timing line and keeps it for the summary.
func recordTiming(t *testing.T, format string, args ...any) {
	t.Helper()
	line := fmt.Sprintf("%s: %s", t.Name(), fmt.Sprintf(format, args...))
	t.Logf("timing: %s", line)
	timingMu.Lock()
	timings = append(timings, line)
	timingMu.Unlock()
}

// ms formats a duration in milliseconds.
func ms(d time.Duration) string { return fmt.Sprintf("%.0fms", float64(d)/float64(time.Millisecond)) }
