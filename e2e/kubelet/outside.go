package kubelet

import (
	"fmt"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"proa/e2e/proc"
)

// Outsider is a test-application process started next to a Pod but outside
// its namespaces, as another workload on the node would be. Tests of kill
// mode use it to check that proa signals nothing outside its Pod.
type Outsider struct {
	Name string // its events come from Name + "/app"
	Exe  string // the base name of its executable
	cmd  *exec.Cmd
	done chan struct{}
	mu   sync.Mutex
	code int
}

// StartOutside runs the test application (see App for the actions) outside
// the Pod's PID, mount and UTS namespaces, from an executable whose base
// name is exe (a hard link to the harness binary, as for Sidecar.Executable).
// Its events are recorded in the Pod's timeline under name + "/app". It dies
// with the harness; Stop ends it sooner.
func (p *Pod) StartOutside(name, exe string, actions ...string) (*Outsider, error) {
	path, err := p.k.executable(exe)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, actions...)
	cmd.Env = []string{envRole + "=app", envEvents + "=" + p.events.path, envAppName + "=" + name}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := proc.Start(cmd); err != nil {
		return nil, err
	}
	o := &Outsider{Name: name, Exe: exe, cmd: cmd, done: make(chan struct{}), code: -1}
	go func() {
		cmd.Wait()
		o.mu.Lock()
		o.code = proc.ExitCode(cmd.ProcessState)
		o.mu.Unlock()
		close(o.done)
		p.event("kubelet", fmt.Sprintf("outside process %s exited with code %d", name, o.code), nil)
	}()
	p.event("kubelet", fmt.Sprintf("started outside process %s (%s, pid %d) outside the Pod's namespaces", name, exe, cmd.Process.Pid), nil)
	return o, nil
}

// PID is the process's PID in the harness's PID namespace.
func (o *Outsider) PID() int { return o.cmd.Process.Pid }

// Exited reports whether the process has exited, and its code (128+N for
// death by signal N).
func (o *Outsider) Exited() (bool, int) {
	select {
	case <-o.done:
		o.mu.Lock()
		defer o.mu.Unlock()
		return true, o.code
	default:
		return false, 0
	}
}

// Stop ends the process (SIGKILL, by the PID the harness started) and waits
// for it.
func (o *Outsider) Stop() {
	if done, _ := o.Exited(); done {
		return
	}
	o.cmd.Process.Kill()
	select {
	case <-o.done:
	case <-time.After(10 * time.Second):
	}
}
