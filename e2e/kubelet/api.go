package kubelet

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"time"
)

// SidecarURL is the URL of path on sidecar name's HTTP server, e.g.
// SidecarURL("envoy", "/quit").
func (p *Pod) SidecarURL(name, path string) string {
	return "http://127.0.0.1:" + strconv.Itoa(p.container(name).port) + path
}

// SetReady overrides what sidecar name's /ready answers from now on; the
// kubelet's readiness probe picks it up within a probe period (or three,
// for becoming unready).
func (p *Pod) SetReady(ctx context.Context, name string, ready bool) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", p.SidecarURL(name, "/control?ready="+strconv.FormatBool(ready)), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("sidecar %s: /control answered %s", name, resp.Status)
	}
	p.event("test", fmt.Sprintf("set %s ready=%v", name, ready), nil)
	return nil
}

// Exits returns the exits of container name's processes so far.
func (p *Pod) Exits(name string) []Exit {
	c := p.container(name)
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Exit(nil), c.exits...)
}

// WaitExit waits for the first exit of container name's process.
func (p *Pod) WaitExit(ctx context.Context, name string) (Exit, error) {
	var e Exit
	err := p.WaitFor(ctx, "container "+name+" to exit", func() bool {
		ex := p.Exits(name)
		if len(ex) > 0 {
			e = ex[0]
		}
		return len(ex) > 0
	})
	return e, err
}

// WaitProaExit waits for the first exit of the first proa container.
func (p *Pod) WaitProaExit(ctx context.Context) (Exit, error) {
	return p.WaitExit(ctx, p.ProaContainer())
}

// Started returns when container name's current (or last) process started.
func (p *Pod) Started(name string) time.Time {
	c := p.container(name)
	p.mu.Lock()
	defer p.mu.Unlock()
	return c.startedAt
}

// Signal sends sig to container name's running process (a process this
// kubelet started: for proa's container, proa itself).
func (p *Pod) Signal(name string, sig os.Signal) error {
	c := p.container(name)
	p.mu.Lock()
	pr, running := c.process, c.state == "running"
	p.mu.Unlock()
	if !running {
		return fmt.Errorf("container %s is not running", name)
	}
	p.event("test", fmt.Sprintf("sending %v to container %s (pid %d)", sig, name, pr.Pid), nil)
	return pr.Signal(sig)
}

// Logs returns the lines container name wrote on stdout and stderr (for
// proa's container: proa's log lines and the application's output).
func (p *Pod) Logs(name string) []string {
	c := p.container(name)
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), c.logs...)
}

// Phase returns the Pod phase the kubelet last computed.
func (p *Pod) Phase() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.phase
}

// Executable is the harness binary every helper process runs.
func (p *Pod) Executable() string { return p.k.self }
