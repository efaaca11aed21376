package kubelet

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ExecCPU is the CPU time podinit (the harness binary that sets up proa's
// container) had used when it executed proa. The exec keeps the PID, and
// the kernel keeps counting from there, so proa's own CPU time is
// /proc/PID/stat's utime+stime minus Process, and the sum of
// /proc/PID/task/*/schedstat minus Thread (the exec'ing thread becomes
// proa's main thread and keeps its run time; podinit's other threads end
// at the exec).
type ExecCPU struct {
	PID     int           // as podinit saw it: the host PID unless proa has a PID namespace
	Process time.Duration // getrusage(RUSAGE_SELF): user + system, every thread
	Thread  time.Duration // the exec'ing thread's run time (schedstat), 0 if unavailable
}

// recordExecCPU runs in podinit right before it executes proa, and writes
// ExecCPU next to the Pod's service-account directory (the Pod's
// directory). It is best effort: a failure only loses the record.
func recordExecCPU(c *podInit) {
	// Stay on this thread: the exec happens on it, so its schedstat is the
	// one that carries over to proa.
	runtime.LockOSThread()
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return
	}
	e := ExecCPU{PID: os.Getpid(),
		Process: time.Duration(ru.Utime.Nano() + ru.Stime.Nano())}
	if b, err := os.ReadFile("/proc/thread-self/schedstat"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			e.Thread = time.Duration(ns)
		}
	}
	b, _ := json.Marshal(e)
	os.WriteFile(execCPUPath(filepath.Dir(c.SADir), e.PID), b, 0o644)
}

func execCPUPath(podDir string, pid int) string {
	return filepath.Join(podDir, fmt.Sprintf("exec-cpu-%d.json", pid))
}

// ExecCPU returns what podinit had used when it executed the proa now
// running as pid (see Pod.PID), for a proa without a PID namespace of its
// own.
func (p *Pod) ExecCPU(pid int) (ExecCPU, error) {
	var e ExecCPU
	b, err := os.ReadFile(execCPUPath(p.Dir, pid))
	if err != nil {
		return e, err
	}
	return e, json.Unmarshal(b, &e)
}
