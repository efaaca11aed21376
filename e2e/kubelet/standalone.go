package kubelet

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
)

// Standalone is one main container's process without the rest of the
// simulated kubelet, for the benchmark's scale mode: a thousand Pods, each
// with one waiter (proa, or the informer waiter it is compared with), whose
// status the benchmark writes itself, with no sidecar process and no
// per-Pod goroutines here. The process gets what proa's container gets from
// podinit: private mount and UTS namespaces, the Pod name as hostname, the
// service-account files at ServiceAccountPath (a read-only bind of Dir's
// "serviceaccount" directory, on a tmpfs /run), a fresh /dev with a
// kubelet-style termination-log mount, and /etc/hosts.
type Standalone struct {
	Dir       string // this container's files; created
	Namespace string
	PodName   string
	PodUID    string
	Container string // its name, in the termination-log mount's path
	Token     string // the service-account token
	CAPEM     []byte
	APIHost   string // KUBERNETES_SERVICE_HOST
	APIPort   int
	Exe       string   // what podinit executes (same PID)
	Argv      []string // its argv, argv[0] included
	Env       []string // added to KUBERNETES_SERVICE_*, HOSTNAME and PATH
}

// Command writes s's files and returns the command that starts it: the
// running executable in role podinit, which must call RunRoleIfRequested
// first thing. Start it with proc.Start.
func (s Standalone) Command() (*exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	sa := filepath.Join(s.Dir, "serviceaccount")
	cdir := filepath.Join(s.Dir, "kubelet", "pods", s.PodUID, "containers", s.Container)
	for _, d := range []string{sa, cdir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	files := map[string][]byte{
		filepath.Join(sa, "token"):     []byte(s.Token),
		filepath.Join(sa, "ca.crt"):    s.CAPEM,
		filepath.Join(sa, "namespace"): []byte(s.Namespace),
		filepath.Join(s.Dir, "hosts"): []byte("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.0.1\t" +
			s.PodName + "\n"),
		filepath.Join(cdir, "termination-log"): nil,
	}
	for path, data := range files {
		if err := os.WriteFile(path, data, 0o644); err != nil {
			return nil, err
		}
	}
	env := append([]string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOSTNAME=" + s.PodName,
		"KUBERNETES_SERVICE_HOST=" + s.APIHost,
		"KUBERNETES_SERVICE_PORT=" + strconv.Itoa(s.APIPort),
		"KUBERNETES_SERVICE_PORT_HTTPS=" + strconv.Itoa(s.APIPort),
	}, s.Env...)
	init := podInit{Hostname: s.PodName, SADir: sa, Proa: s.Exe, Argv: s.Argv, Env: env,
		Hosts: filepath.Join(s.Dir, "hosts"), TermLog: filepath.Join(cdir, "termination-log")}
	cfg, err := json.Marshal(init)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self)
	cmd.Env = []string{envRole + "=podinit", envPodInit + "=" + string(cfg)}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Unshareflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWUTS}
	return cmd, nil
}

// ExecCPU returns what podinit had used when it executed s's process,
// running as pid (see Pod.ExecCPU).
func (s Standalone) ExecCPU(pid int) (ExecCPU, error) {
	var e ExecCPU
	b, err := os.ReadFile(execCPUPath(s.Dir, pid))
	if err != nil {
		return e, fmt.Errorf("podinit's CPU record: %w", err)
	}
	return e, json.Unmarshal(b, &e)
}
