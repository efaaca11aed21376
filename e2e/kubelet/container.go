package kubelet

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"proa/e2e/proc"
)

// container is the kubelet's record of one container. Fields below the
// marker are guarded by pod.mu.
type container struct {
	pod      *Pod
	spec     Container
	native   bool
	port     int
	listener *net.TCPListener // reserved port, handed to the first start
	// With Sidecar.ProxyAPI: the port that forwards to the API server.
	proxyPort     int
	proxyListener *net.TCPListener

	// guarded by pod.mu
	state        string // waiting, running, terminated
	reason       string
	ready        bool
	started      bool
	startedAt    time.Time
	finishedAt   time.Time
	exitCode     int
	restartCount int
	last         *lastTerm
	id           string
	process      *os.Process
	done         chan struct{} // closed when the current process exited
	exits        []Exit
	logs         []string
}

type lastTerm struct {
	exitCode              int
	reason, id            string
	startedAt, finishedAt time.Time
}

// Exit is one exit of a container's process.
type Exit struct {
	Code    int // exit status, or 128+N for death by signal N
	Started time.Time
	At      time.Time
}

func (e Exit) Duration() time.Duration { return e.At.Sub(e.Started) }

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// startContainer starts c's process and records it as running. The caller
// holds a count of p.wg.
func (p *Pod) startContainer(c *container) {
	p.mu.Lock()
	if p.terminating || p.closedFlag {
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	cmd, err := c.command()
	var stdout, stderr io.ReadCloser
	if err == nil {
		stdout, stderr, err = pipes(cmd)
	}
	if err == nil {
		err = proc.Start(cmd)
	}
	// The child has its own copy of the listening socket; close every copy
	// here, so a sidecar that exited refuses connections.
	if cmd != nil {
		for _, f := range cmd.ExtraFiles {
			f.Close()
		}
	}
	p.mu.Lock()
	if c.listener != nil {
		c.listener.Close()
		c.listener = nil
	}
	if c.proxyListener != nil {
		c.proxyListener.Close()
		c.proxyListener = nil
	}
	c.id = "containerd://" + randomHex(32)
	if err != nil {
		now := time.Now()
		c.startedAt, c.reason = now, "StartError"
		p.exitedLocked(c, 128, now, now)
		p.mu.Unlock()
		p.markDirty()
		p.event("kubelet", fmt.Sprintf("container %s failed to start: %v", c.spec.Name, err), nil)
		return
	}
	c.state, c.reason, c.started = "running", "", true
	c.ready = c.spec.Proa != nil || c.spec.Sidecar.NoProbe
	c.startedAt = time.Now()
	c.process = cmd.Process
	c.done = make(chan struct{})
	if p.closedFlag {
		cmd.Process.Kill() // Close ran meanwhile; supervise records the exit
	}
	p.wg.Add(3)
	var output sync.WaitGroup
	output.Add(2)
	go c.pump(stdout, "stdout", &output)
	go c.pump(stderr, "stderr", &output)
	go c.supervise(cmd, c.done, c.startedAt, &output)
	if c.spec.Sidecar != nil && !c.spec.Sidecar.NoProbe && c.restartCount == 0 {
		p.wg.Add(1)
		go c.probeLoop()
	}
	p.notifyLocked()
	p.mu.Unlock()
	p.markDirty()
	p.event("kubelet", fmt.Sprintf("started container %s (pid %d)", c.spec.Name, cmd.Process.Pid), nil)
}

func pipes(cmd *exec.Cmd) (io.ReadCloser, io.ReadCloser, error) {
	o, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	e, err := cmd.StderrPipe()
	return o, e, err
}

// command builds the process for c.
func (c *container) command() (*exec.Cmd, error) {
	p := c.pod
	k := p.k
	cmd := exec.Command(k.self)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if sc := c.spec.Sidecar; sc != nil {
		p.mu.Lock()
		l, pl := c.listener, c.proxyListener
		p.mu.Unlock()
		f, err := listenerFile(l, c.port)
		if err != nil {
			return nil, err
		}
		cmd.ExtraFiles = []*os.File{f}
		cfg, _ := json.Marshal(sidecarConfig{Name: c.spec.Name, Sidecar: *sc})
		cmd.Env = []string{envRole + "=sidecar", envSidecar + "=" + string(cfg), envEvents + "=" + p.events.path,
			"PATH=" + os.Getenv("PATH")}
		if sc.ProxyAPI {
			pf, err := listenerFile(pl, c.proxyPort)
			if err != nil {
				return nil, err
			}
			cmd.ExtraFiles = append(cmd.ExtraFiles, pf) // fd 4
			cmd.Env = append(cmd.Env, envProxyTo+"="+net.JoinHostPort(p.cl.Host, strconv.Itoa(p.cl.Port)))
		}
		if cmd.Path, err = k.executable(sc.Executable); err != nil {
			return nil, err
		}
		cmd.Args[0] = cmd.Path
		if p.pause != nil {
			p.enterWrap(cmd)
		}
		return cmd, nil
	}
	pr := c.spec.Proa
	host := pr.Hostname
	if host == "" {
		host = p.Name
	}
	apiHost, apiPort := p.cl.Host, strconv.Itoa(p.cl.Port)
	if pr.APIAddress != "" {
		var err error
		if apiHost, apiPort, err = net.SplitHostPort(pr.APIAddress); err != nil {
			return nil, fmt.Errorf("Proa.APIAddress: %v", err)
		}
	}
	if pr.APIVia != "" {
		apiPort = strconv.Itoa(p.container(pr.APIVia).proxyPort)
	}
	env := []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOSTNAME=" + host,
		"KUBERNETES_SERVICE_HOST=" + apiHost,
		"KUBERNETES_SERVICE_PORT=" + apiPort,
		"KUBERNETES_SERVICE_PORT_HTTPS=" + apiPort,
		envRole + "=app",
		envEvents + "=" + p.events.path,
		envAppName + "=" + c.spec.Name,
	}
	for _, key := range sortedKeys(pr.Env) {
		env = append(env, key+"="+pr.Env[key])
	}
	argv := append([]string{"/proa"}, p.expandAll(pr.Args)...)
	argv = append(argv, "--")
	for _, a := range p.expandAll(pr.Command) {
		if a == AppMarker {
			a = k.app
		}
		argv = append(argv, a)
	}
	cdir := filepath.Join(p.Dir, "kubelet", "pods", p.UID, "containers", c.spec.Name)
	if err := os.MkdirAll(cdir, 0o755); err != nil {
		return nil, err
	}
	init := podInit{Hostname: host, SADir: p.saDir, Proa: k.opts.Proa, Argv: argv, Env: env,
		Hosts:     filepath.Join(p.Dir, "kubelet", "pods", p.UID, "etc-hosts"),
		MountProc: pr.PIDNamespace || p.Spec.ShareProcessNamespace}
	hosts := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.0.1\t" + host + "\n"
	if err := os.WriteFile(init.Hosts, []byte(hosts), 0o644); err != nil {
		return nil, err
	}
	if !pr.NoTerminationLog {
		init.TermLog = filepath.Join(cdir, randomHex(4))
		if err := os.WriteFile(init.TermLog, nil, 0o666); err != nil {
			return nil, err
		}
	}
	cfg, _ := json.Marshal(init)
	cmd.Env = []string{envRole + "=podinit", envPodInit + "=" + string(cfg)}
	cmd.SysProcAttr.Unshareflags = syscall.CLONE_NEWNS | syscall.CLONE_NEWUTS
	switch {
	case p.pause != nil:
		p.enterWrap(cmd)
	case pr.PIDNamespace:
		cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWPID
	}
	return cmd, nil
}

// listenerFile is a file for the listening socket l to hand to a process,
// or, when l is nil (a restart), for a new one on the same port.
func listenerFile(l *net.TCPListener, port int) (*os.File, error) {
	if l == nil {
		nl, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			return nil, err
		}
		l = nl.(*net.TCPListener)
		defer l.Close() // the file is a copy
	}
	return l.File()
}

// pump reads one output stream of the container line by line.
func (c *container) pump(r io.Reader, stream string, output *sync.WaitGroup) {
	defer c.pod.wg.Done()
	defer output.Done()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		p := c.pod
		p.mu.Lock()
		c.logs = append(c.logs, line)
		p.mu.Unlock()
		switch {
		case c.spec.Proa != nil && stream == "stderr" && strings.HasPrefix(line, "{"):
			src := "proa"
			if c.spec.Name != p.ProaContainer() {
				src = "proa[" + c.spec.Name + "]"
			}
			p.events.proaLine(c.spec.Name, src, line)
		case c.spec.Proa != nil:
			p.events.output(c.spec.Name+"/app", line)
		default:
			p.events.output(c.spec.Name, line)
		}
	}
}

// supervise waits for the process and records its exit, once its output
// has been read (as a real runtime has a container's whole log when it
// reports the exit), or a second later if a descendant keeps the output
// open.
func (c *container) supervise(cmd *exec.Cmd, done chan struct{}, started time.Time, output *sync.WaitGroup) {
	p := c.pod
	defer p.wg.Done()
	cmd.Wait()
	read := make(chan struct{})
	go func() { output.Wait(); close(read) }()
	select {
	case <-read:
	case <-time.After(time.Second):
	}
	code := proc.ExitCode(cmd.ProcessState)
	p.mu.Lock()
	p.exitedLocked(c, code, started, time.Now())
	close(done)
	p.mu.Unlock()
	p.markDirty()
	p.event("kubelet", fmt.Sprintf("container %s exited with code %d", c.spec.Name, code), nil)
}

// exitedLocked records that c's process ended, restarts it when the restart
// policy says so, and starts the Pod's termination once every regular
// container is done.
func (p *Pod) exitedLocked(c *container, code int, started, now time.Time) {
	c.exits = append(c.exits, Exit{Code: code, Started: started, At: now})
	c.state, c.ready, c.started, c.exitCode, c.finishedAt = "terminated", false, false, code, now
	if c.reason != "StartError" {
		c.reason = "Completed"
		if code != 0 {
			c.reason = "Error"
		}
	}
	restart := c.native || p.Spec.RestartPolicy == "Always" || p.Spec.RestartPolicy == "OnFailure" && code != 0
	restart = restart && !p.terminating && !p.closedFlag
	if restart {
		c.last = &lastTerm{exitCode: code, reason: c.reason, id: c.id, startedAt: c.startedAt, finishedAt: now}
		c.state, c.reason = "waiting", "CrashLoopBackOff"
		c.restartCount++
		p.wg.Add(1)
		time.AfterFunc(p.k.opts.RestartDelay, func() {
			defer p.wg.Done()
			p.startContainer(c)
		})
	}
	allDone := !restart
	for _, o := range p.containers {
		if !o.native && o.state != "terminated" {
			allDone = false
		}
	}
	if allDone && !p.terminating && !p.closedFlag {
		p.terminating = true
		p.wg.Add(1)
		go p.terminate()
	}
	p.notifyLocked()
}

// probeLoop runs the readiness probe every ProbePeriod while the container
// runs: one success makes it ready, three failures unready.
func (c *container) probeLoop() {
	p := c.pod
	defer p.wg.Done()
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	url := "http://127.0.0.1:" + strconv.Itoa(c.port) + "/ready"
	tick := time.NewTicker(p.k.opts.ProbePeriod)
	defer tick.Stop()
	failures := 0
	for {
		select {
		case <-p.closed:
			return
		case <-tick.C:
		}
		p.mu.Lock()
		running := c.state == "running"
		p.mu.Unlock()
		if !running {
			failures = 0
			continue
		}
		ok := false
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		req.Header.Set("User-Agent", "kube-probe/1.34")
		if resp, err := client.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			ok = resp.StatusCode >= 200 && resp.StatusCode < 400
		}
		cancel()
		if ok {
			failures = 0
		} else {
			failures++
		}
		p.mu.Lock()
		if c.state == "running" && (ok && !c.ready || !ok && c.ready && failures >= 3) {
			c.ready = ok
			p.notifyLocked()
			p.markDirty()
		}
		p.mu.Unlock()
	}
}

// stop sends SIGTERM to the running process, then SIGKILL after grace.
func (c *container) stop(grace time.Duration) {
	c.pod.mu.Lock()
	pr, done := c.process, c.done
	running := c.state == "running"
	c.pod.mu.Unlock()
	if running {
		proc.Stop(pr, done, grace)
	}
}

// kill sends SIGKILL to the running process and waits for it.
func (c *container) kill() {
	c.pod.mu.Lock()
	pr, done := c.process, c.done
	running := c.state == "running"
	c.pod.mu.Unlock()
	if running {
		pr.Kill()
		<-done
	}
}
