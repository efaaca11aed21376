package cluster

import (
	"bufio"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Versions of the control plane this harness builds.
const (
	KubeVersion = "v1.34.4"
	EtcdVersion = "v3.6.5"
)

// The go.mod/go.sum of the tiny modules that build the binaries. They are
// kept under other names so they do not form nested modules (which go:embed
// cannot reach) and so this module's go.mod needs no requirements. To update:
// copy X.mod to an empty directory as go.mod, edit, `go mod tidy`, copy back
// (for the waiter, with waiter.go as main.go minus its build constraint).
var (
	//go:embed tools/kube-apiserver.mod
	kubeMod string
	//go:embed tools/kube-apiserver.sum
	kubeSum string
	//go:embed tools/etcd.mod
	etcdMod string
	//go:embed tools/etcd.sum
	etcdSum string
	//go:embed tools/waiter.mod
	waiterMod string
	//go:embed tools/waiter.sum
	waiterSum string
	//go:embed tools/waiter.go
	waiterMain string
)

// Binaries are the paths of the built executables. Kubelet is set only by
// EnsureNodeBinaries.
type Binaries struct {
	Etcd, APIServer, Kubelet string
}

type tool struct {
	name, version, pkg, mod, sum string
	main                         string   // main.go of the tool module, for a tool built from our own source
	flags                        []string // extra go build flags
}

// The kubelet is a second tool of kube-apiserver's module: one module graph,
// one download, and the packages they share are compiled once.
var (
	etcdTool      = tool{name: "etcd", version: EtcdVersion, pkg: "go.etcd.io/etcd/server/v3", mod: etcdMod, sum: etcdSum}
	apiserverTool = tool{name: "kube-apiserver", version: KubeVersion, pkg: "k8s.io/kubernetes/cmd/kube-apiserver", mod: kubeMod, sum: kubeSum}
	kubeletTool   = tool{name: "kubelet", version: KubeVersion, pkg: "k8s.io/kubernetes/cmd/kubelet", mod: kubeMod, sum: kubeSum}
)

// CacheDir is ${PROA_E2E_CACHE:-$HOME/.cache/proa-e2e}.
func CacheDir() string {
	if d := os.Getenv("PROA_E2E_CACHE"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "proa-e2e-cache")
	}
	return filepath.Join(home, ".cache", "proa-e2e")
}

// EnsureBinaries returns the cached etcd and kube-apiserver binaries, building
// them from the Go module proxy first when they are missing (minutes on a
// fresh machine). Progress lines go to log.
func EnsureBinaries(ctx context.Context, cacheDir string, log io.Writer) (Binaries, error) {
	paths, err := ensure(ctx, cacheDir, log, []tool{etcdTool, apiserverTool}, "the control plane",
		"about 650 MB of modules and 3-6 minutes on 2 cores")
	if err != nil {
		return Binaries{}, err
	}
	return Binaries{Etcd: paths[0], APIServer: paths[1]}, nil
}

// EnsureNodeBinaries is EnsureBinaries plus the kubelet (about 1 minute more
// when kube-apiserver's module and build caches are warm, 4 minutes cold).
func EnsureNodeBinaries(ctx context.Context, cacheDir string, log io.Writer) (Binaries, error) {
	paths, err := ensure(ctx, cacheDir, log, []tool{etcdTool, apiserverTool, kubeletTool}, "the control plane and the kubelet",
		"about 650 MB of modules and 4-8 minutes on 2 cores")
	if err != nil {
		return Binaries{}, err
	}
	return Binaries{Etcd: paths[0], APIServer: paths[1], Kubelet: paths[2]}, nil
}

// WaiterVersion is the client-go version of the informer waiter.
const WaiterVersion = "v0.34.4"

// EnsureWaiter returns the cached informer waiter (tools/waiter.go: a
// client-go informer that waits for sidecars, what the benchmark compares
// proa with), building it first when it is missing: about a minute with the
// control plane's modules already downloaded. It is built as such tools
// ship (-trimpath -ldflags='-s -w'). Its file name carries a hash of its
// source and module files, so a change rebuilds it.
func EnsureWaiter(ctx context.Context, cacheDir string, log io.Writer) (string, error) {
	// The constraint keeps the file out of this module; its own module
	// builds it without.
	src := strings.Replace(waiterMain, "//go:build ignore\n", "", 1)
	h := sha256.Sum256([]byte(waiterMod + waiterSum + src))
	t := tool{name: "informer-waiter", version: WaiterVersion + "-" + hex.EncodeToString(h[:4]),
		pkg: ".", mod: waiterMod, sum: waiterSum, main: src, flags: []string{"-ldflags=-s -w"}}
	paths, err := ensure(ctx, cacheDir, log, []tool{t}, "the informer waiter (client-go "+WaiterVersion+")",
		"about a minute on 2 cores")
	if err != nil {
		return "", err
	}
	return paths[0], nil
}

// ensure returns the cached binaries of ts, in order, building the missing
// ones under a file lock shared with other test runs.
func ensure(ctx context.Context, cacheDir string, log io.Writer, ts []tool, what, cost string) ([]string, error) {
	if err := os.MkdirAll(filepath.Join(cacheDir, "bin"), 0o755); err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(filepath.Join(cacheDir, "build.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return nil, err
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)

	paths := make([]string, len(ts))
	var missing []int
	for i, t := range ts {
		paths[i] = filepath.Join(cacheDir, "bin", t.name+"-"+t.version)
		if fi, err := os.Stat(paths[i]); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			continue
		}
		missing = append(missing, i)
	}
	if len(missing) > 0 {
		fmt.Fprintf(log, "proa-e2e: building %s from the Go module proxy into %s\n", what, cacheDir)
		fmt.Fprintf(log, "proa-e2e: first run only: %s; later runs reuse it\n", cost)
		start := time.Now()
		errs := make([]error, len(ts))
		var wg sync.WaitGroup
		for _, i := range missing {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = build(ctx, ts[i], cacheDir, paths[i], log)
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
		fmt.Fprintf(log, "proa-e2e: %s built in %s\n", what, time.Since(start).Round(time.Second))
	}
	return paths, nil
}

// goCommand finds the go command, also when sudo left it off PATH.
func goCommand() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	for _, root := range []string{os.Getenv("GOROOT"), "/usr/local/go"} {
		if p := filepath.Join(root, "bin", "go"); root != "" && fileExists(p) {
			return p
		}
	}
	return "go"
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func build(ctx context.Context, t tool, cacheDir, out string, log io.Writer) error {
	src := filepath.Join(cacheDir, "src", t.name+"-"+t.version)
	if err := os.MkdirAll(src, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte(t.mod), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(src, "go.sum"), []byte(t.sum), 0o644); err != nil {
		return err
	}
	if t.main != "" {
		if err := os.WriteFile(filepath.Join(src, "main.go"), []byte(t.main), 0o644); err != nil {
			return err
		}
	}
	tmp := out + ".tmp"
	args := append(append([]string{"build", "-trimpath", "-v"}, t.flags...), "-o", tmp, t.pkg)
	cmd := exec.CommandContext(ctx, goCommand(), args...)
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly", "CGO_ENABLED=0", "GOTOOLCHAIN=local")
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	var downloads, packages atomic.Int64
	var tail []string
	scanDone := make(chan struct{})
	go func() {
		defer close(scanDone)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "go: downloading ") {
				downloads.Add(1)
			} else if !strings.Contains(line, " ") {
				packages.Add(1) // -v prints one import path per compiled package
			}
			if tail = append(tail, line); len(tail) > 40 {
				tail = tail[1:]
			}
		}
	}()
	fmt.Fprintf(log, "proa-e2e:   building %s %s (go build %s)\n", t.name, t.version, t.pkg)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return err
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait(); pw.Close() }()
	tick := time.NewTicker(15 * time.Second)
	defer tick.Stop()
	for {
		select {
		case err := <-waitErr:
			<-scanDone
			if err != nil {
				return fmt.Errorf("building %s %s: %v\n%s", t.name, t.version, err, strings.Join(tail, "\n"))
			}
			fmt.Fprintf(log, "proa-e2e:   %s %s built in %s\n", t.name, t.version, time.Since(start).Round(time.Second))
			return os.Rename(tmp, out)
		case <-tick.C:
			fmt.Fprintf(log, "proa-e2e:   still building %s: %s, %d modules downloaded, %d packages compiled\n",
				t.name, time.Since(start).Round(time.Second), downloads.Load(), packages.Load())
		}
	}
}
