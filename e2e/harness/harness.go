// Package harness sets up everything a real-control-plane test or demo
// needs: the control plane (built and cached on first use), proa built from
// the repository, and a simulated kubelet.
package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"proa/e2e/cluster"
	"proa/e2e/kubelet"
)

// Options configure Setup.
type Options struct {
	Log          io.Writer     // progress lines (building, starting); nil for none
	Output       io.Writer     // live Pod events, see kubelet.Options.Output
	ProbePeriod  time.Duration // kubelet readiness probe period (default 200ms)
	Keep         bool          // keep the working directory on Close
	ProaRequired bool          // fail Setup if proa cannot be built
	// AuditStatusWrites: see cluster.Options.
	AuditStatusWrites bool
}

// Env is a running control plane, a kubelet and a proa binary.
type Env struct {
	Cluster *cluster.Cluster
	Kubelet *kubelet.Kubelet
	Proa    string // path of the proa binary
	ProaErr error  // why proa could not be built, if it could not
	Dir     string // working directory (removed by Close unless Keep)
	opts    Options
}

// Setup builds or reuses kube-apiserver and etcd, starts them, builds proa
// (or uses $PROA_E2E_PROA) and creates a kubelet. Call Close when done.
func Setup(ctx context.Context, opts Options) (e *Env, err error) {
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	dir, err := os.MkdirTemp("", "proa-e2e-")
	if err != nil {
		return nil, err
	}
	e = &Env{Dir: dir, opts: opts}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	bin, err := cluster.EnsureBinaries(ctx, cluster.CacheDir(), opts.Log)
	if err != nil {
		return nil, err
	}
	cdir := filepath.Join(dir, "cluster")
	if err := os.MkdirAll(cdir, 0o755); err != nil {
		return nil, err
	}
	if e.Cluster, err = cluster.Start(ctx, cluster.Options{Dir: cdir, Bin: bin, Log: opts.Log, AuditStatusWrites: opts.AuditStatusWrites}); err != nil {
		return nil, err
	}
	e.Proa, e.ProaErr = BuildProa(filepath.Join(dir, "bin", "proa"))
	if e.ProaErr != nil {
		if opts.ProaRequired {
			return nil, e.ProaErr
		}
		fmt.Fprintln(opts.Log, "proa-e2e: building proa failed; scenarios that run it will fail:", e.ProaErr)
	}
	e.Kubelet, err = kubelet.New(kubelet.Options{Cluster: e.Cluster, Proa: e.Proa, Dir: dir,
		ProbePeriod: opts.ProbePeriod, Output: opts.Output})
	return e, err
}

// Close stops the control plane and removes the working directory (unless
// Options.Keep). Pods must be closed first.
func (e *Env) Close() {
	if e.Cluster != nil {
		e.Cluster.Stop()
	}
	if e.opts.Keep {
		fmt.Fprintln(e.opts.Log, "proa-e2e: kept", e.Dir)
	} else {
		os.RemoveAll(e.Dir)
	}
}

// RepoRoot finds proa's repository root: the nearest directory at or above
// the working directory whose go.mod declares module proa.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.HasPrefix(string(b), "module proa\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("proa's repository (a go.mod with module proa) not found at or above the working directory")
		}
		dir = parent
	}
}

// BuildProa builds proa from the repository root into out, as its README
// says (CGO_ENABLED=0 go build -trimpath), or returns $PROA_E2E_PROA if set.
func BuildProa(out string) (string, error) {
	if p := os.Getenv("PROA_E2E_PROA"); p != "" {
		return filepath.Abs(p)
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, ".")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build in %s: %v\n%s", root, err, b)
	}
	return out, nil
}
