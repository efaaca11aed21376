package e2e

import (
	"context"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"proa/e2e/cluster"
	"proa/e2e/kubelet"
)

// testCtx is a context that ends after d or when the test ends.
func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// podName derives a DNS-1123 name from the test's name.
func podName(t *testing.T) string { return cluster.DNSName(strings.TrimPrefix(t.Name(), "Test")) }

// startPod runs spec (Name defaults to podName(t)) and registers cleanup:
// every process is killed at the end, and on failure (or with
// PROA_E2E_TIMELINE=1) the Pod's timeline and proa's output are logged.
func startPod(t *testing.T, spec kubelet.PodSpec) *kubelet.Pod {
	t.Helper()
	return startPodOn(t, env.Kubelet, spec)
}

// startPodOn is startPod with another kubelet (of another control plane).
func startPodOn(t *testing.T, k *kubelet.Kubelet, spec kubelet.PodSpec) *kubelet.Pod {
	t.Helper()
	needRoot(t)
	if env.ProaErr != nil {
		t.Fatalf("proa could not be built: %v", env.ProaErr)
	}
	if spec.Name == "" {
		spec.Name = podName(t)
	}
	p, err := k.Run(testCtx(t, time.Minute), spec)
	if err != nil {
		t.Fatalf("starting Pod %s: %v", spec.Name, err)
	}
	t.Cleanup(func() {
		p.Close()
		if t.Failed() || os.Getenv("PROA_E2E_TIMELINE") != "" {
			t.Logf("Pod %s/%s timeline:\n%s", p.Namespace, p.Name, kubelet.Timeline(p.Events(), p.Created))
			for _, c := range append(spec.InitContainers, spec.Containers...) {
				if c.Proa != nil {
					t.Logf("container %s output (proa's stderr and the app's output):\n  %s", c.Name,
						strings.Join(p.Logs(c.Name), "\n  "))
				}
			}
		}
	})
	return p
}

// proaPod is the common shape: container "main" runs proa with args and the
// command, container "envoy" is a sidecar.
func proaPod(sc kubelet.Sidecar, args []string, command []string) kubelet.PodSpec {
	return kubelet.PodSpec{Containers: []kubelet.Container{
		{Name: "main", Proa: &kubelet.Proa{Args: args, Command: command}},
		{Name: "envoy", Sidecar: &sc},
	}}
}

// appEvent waits for the application in container "main" to record an event
// starting with prefix.
func appEvent(t *testing.T, ctx context.Context, p *kubelet.Pod, prefix string) kubelet.Event {
	t.Helper()
	e, err := p.WaitEvent(ctx, "main/app", prefix)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// appRan reports whether the application in container "main" started.
func appRan(p *kubelet.Pod) bool {
	_, ok := p.FindEvent("main/app", "started")
	return ok
}

// waitExit waits for proa to exit and checks its exit code.
func waitExit(t *testing.T, ctx context.Context, p *kubelet.Pod, want int) kubelet.Exit {
	t.Helper()
	ex, err := p.WaitProaExit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ex.Code != want {
		t.Errorf("proa exited with code %d, want %d", ex.Code, want)
	}
	return ex
}

// logLine returns proa's first log line with message msg, failing the test
// if there is none.
func logLine(t *testing.T, p *kubelet.Pod, msg string) kubelet.LogLine {
	t.Helper()
	l, ok := p.FindLog("", msg)
	if !ok {
		t.Errorf("proa logged no %q line", msg)
	}
	return l
}

// closedPortURL is a loopback URL where nothing listens.
func closedPortURL(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr + "/quit"
}

// hangingURL is a loopback URL whose server accepts connections and never
// answers (until the test ends).
func hangingURL(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { close(done); l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { <-done; c.Close() }()
		}
	}()
	return "http://" + l.Addr().String() + "/quit"
}

func itoa(i int) string { return strconv.Itoa(i) }

func readFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	return string(b), err
}
