// Tests of proa against a real kube-apiserver and etcd on loopback.
//
// TestMain builds (or reuses from the cache) kube-apiserver and etcd, starts
// them, builds proa from the repository root, and runs the scenarios. Each
// scenario runs a Pod through the simulated kubelet (package kubelet) with
// proa as the entrypoint of one container, in its own mount and UTS
// namespaces, which needs root: without root these tests skip, unless
// CI=true, where they fail.
//
//	cd e2e && go test -count=1 -timeout 30m -v
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"proa/e2e/cluster"
	"proa/e2e/harness"
	"proa/e2e/kubelet"
)

// env is shared by every test.
var env struct {
	*harness.Env
	timingMu sync.Mutex
	timings  []string
}

func TestMain(m *testing.M) {
	kubelet.RunRoleIfRequested()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	var mu sync.Mutex // held while cleaning up
	var e *harness.Env
	go func() {
		// Interrupted: stop the control plane (child processes die with this
		// process anyway), remove the working directory, exit.
		s, ok := <-sigs
		if !ok {
			return
		}
		fmt.Fprintf(os.Stderr, "proa-e2e: %v: stopping\n", s)
		cancel() // during Setup: it fails, cleans up, and run returns
		mu.Lock()
		if e != nil {
			e.Close()
			os.Exit(130)
		}
		mu.Unlock()
	}()
	ee, err := harness.Setup(ctx, harness.Options{Log: os.Stderr, Keep: os.Getenv("PROA_E2E_KEEP") != ""})
	if err != nil {
		fmt.Fprintln(os.Stderr, "proa-e2e:", err)
		return 1
	}
	mu.Lock()
	e = ee
	mu.Unlock()
	env.Env = e
	defer func() {
		mu.Lock()
		e.Close()
	}()
	code := m.Run()
	if len(env.timings) > 0 {
		sort.Strings(env.timings)
		fmt.Printf("\nproa-e2e timings (kube-apiserver %s, etcd %s):\n  %s\n",
			cluster.KubeVersion, cluster.EtcdVersion, strings.Join(env.timings, "\n  "))
	}
	return code
}

// needRoot skips the test without root (proa runs in new namespaces),
// unless CI=true, where it fails.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test needs root (private mount and UTS namespaces for proa), and CI=true")
	}
	t.Skip("needs root: proa runs in private mount and UTS namespaces (run as root, or CI=true to fail instead)")
}

// recordTiming logs a timing line and keeps it for the summary TestMain
// prints at the end.
func recordTiming(t *testing.T, format string, args ...any) {
	t.Helper()
	line := fmt.Sprintf("%s: %s", t.Name(), fmt.Sprintf(format, args...))
	t.Logf("timing: %s", line)
	env.timingMu.Lock()
	env.timings = append(env.timings, line)
	env.timingMu.Unlock()
}

// ms formats a duration in milliseconds.
func ms(d time.Duration) string { return fmt.Sprintf("%.0fms", float64(d)/float64(time.Millisecond)) }
