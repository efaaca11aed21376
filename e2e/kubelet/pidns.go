package kubelet

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"

	"proa/e2e/proc"
)

// A Pod with ShareProcessNamespace gets a "pause" process, PID 1 of a new
// PID namespace, as with a real runtime. Every container process joins that
// namespace through an "enter" helper: the kubelet starts the helper, which
// (on a locked OS thread) setns()es into the pause process's PID namespace,
// starts the container's real process there, forwards signals to it and
// exits the way it exited.
const envEnter = "PROA_E2E_ENTER"

type enterConfig struct {
	PausePID    int
	Path        string   // the container's executable
	Env         []string // the container's environment
	Unshare     uintptr  // Unshareflags for the container process
	HasListener bool     // pass fd 3 on
}

func (p *Pod) startPause() error {
	cmd := exec.Command(p.k.self)
	cmd.Env = []string{envRole + "=pause"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Cloneflags: syscall.CLONE_NEWPID}
	if err := proc.Start(cmd); err != nil {
		return fmt.Errorf("starting the pause process: %w", err)
	}
	done := make(chan struct{})
	p.mu.Lock()
	p.pause, p.pauseDone = cmd.Process, done
	if p.closedFlag {
		cmd.Process.Kill() // Close ran meanwhile
	}
	p.mu.Unlock()
	go func() {
		cmd.Wait()
		p.event("kubelet", "pause process exited: "+cmd.ProcessState.String(), nil)
		close(done)
	}()
	p.event("kubelet", fmt.Sprintf("started pause process (pid %d), PID 1 of the Pod's PID namespace", cmd.Process.Pid), nil)
	return nil
}

// enterWrap turns cmd (not yet started) into a helper that runs it inside
// the Pod's shared PID namespace.
func (p *Pod) enterWrap(cmd *exec.Cmd) {
	cfg := enterConfig{PausePID: p.pause.Pid, Path: cmd.Path, Env: cmd.Env,
		Unshare: cmd.SysProcAttr.Unshareflags, HasListener: len(cmd.ExtraFiles) > 0}
	b, _ := json.Marshal(cfg)
	cmd.Path = p.k.self
	cmd.Args = []string{p.k.self}
	cmd.Env = []string{envRole + "=enter", envEnter + "=" + string(b)}
	cmd.SysProcAttr.Unshareflags = 0
	cmd.SysProcAttr.Cloneflags = 0
}

// executable returns the path to run for a sidecar: the harness binary, or
// a hard link to it named name (so /proc/PID/exe has that base name).
func (k *Kubelet) executable(name string) (string, error) {
	if name == "" {
		return k.self, nil
	}
	path := filepath.Join(filepath.Dir(k.app), name)
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	if err := os.Link(k.self, path); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("linking %s: %w (the harness binary and its work directory must be on one file system)", path, err)
	}
	return path, nil
}

func pauseMain() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}

// setnsSyscall is setns(2)'s number; package syscall does not define it.
var setnsSyscall = map[string]uintptr{"amd64": 308, "arm64": 268, "riscv64": 268, "386": 346,
	"arm": 375, "ppc64le": 350, "s390x": 339, "loong64": 268}

func enterMain() {
	var cfg enterConfig
	if err := json.Unmarshal([]byte(os.Getenv(envEnter)), &cfg); err != nil {
		podInitFail("enter: bad config: %v", err)
	}
	runtime.LockOSThread() // setns(CLONE_NEWPID) applies to this thread's children
	ns, err := os.Open("/proc/" + strconv.Itoa(cfg.PausePID) + "/ns/pid")
	if err != nil {
		podInitFail("enter: %v", err)
	}
	nr, ok := setnsSyscall[runtime.GOARCH]
	if !ok {
		podInitFail("enter: setns: unknown syscall number on %s", runtime.GOARCH)
	}
	if _, _, e := syscall.RawSyscall(nr, ns.Fd(), syscall.CLONE_NEWPID, 0); e != 0 {
		podInitFail("enter: setns: %v", e)
	}
	cmd := exec.Command(cfg.Path)
	cmd.Env = cfg.Env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// No Pdeathsig: Go's child checks getppid() against its parent's PID,
	// which reads 0 across PID namespaces, and would kill itself at once.
	// The namespace dies with the pause process, which dies with the harness.
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: cfg.Unshare}
	if cfg.HasListener {
		cmd.ExtraFiles = []*os.File{os.NewFile(3, "listener")}
	}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT,
		syscall.SIGUSR1, syscall.SIGUSR2)
	if err := cmd.Start(); err != nil {
		podInitFail("enter: %v", err)
	}
	if cfg.HasListener {
		cmd.ExtraFiles[0].Close()
	}
	go func() {
		for s := range sigs {
			cmd.Process.Signal(s)
		}
	}()
	cmd.Wait()
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		signal.Reset()
		syscall.Kill(os.Getpid(), ws.Signal())
	}
	os.Exit(cmd.ProcessState.ExitCode())
}
