package kubelet

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// podInit sets up proa's container inside its new mount and UTS (and
// optionally PID) namespaces, then executes proa in place (same PID).
type podInit struct {
	Hostname  string
	SADir     string // host directory bound (read-only) at ServiceAccountPath
	TermLog   string // host file bound at /dev/termination-log, if set
	Hosts     string // host file bound at /etc/hosts
	Proa      string
	Argv      []string
	Env       []string
	MountProc bool // in a PID namespace of its own or the Pod's: mount its /proc
}

// hostDevices are bound from the host into the container's fresh /dev.
var hostDevices = []string{"null", "zero", "full", "random", "urandom", "tty"}

func podInitMain() {
	var c podInit
	if err := json.Unmarshal([]byte(os.Getenv(envPodInit)), &c); err != nil {
		podInitFail("bad config: %v", err)
	}
	if err := c.setup(); err != nil {
		podInitFail("%v", err)
	}
	recordExecCPU(&c) // for the benchmark: proa's own CPU time is what comes after
	err := syscall.Exec(c.Proa, c.Argv, c.Env)
	podInitFail("exec %s: %v", c.Proa, err)
}

func podInitFail(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "proa-e2e podinit: "+format+"\n", a...)
	os.Exit(125)
}

func mount(src, target, fstype string, flags uintptr, data string) error {
	if err := syscall.Mount(src, target, fstype, flags, data); err != nil {
		return fmt.Errorf("mount %s on %s: %v", src, target, err)
	}
	return nil
}

func bindRO(src, target string) error {
	if err := mount(src, target, "", syscall.MS_BIND, ""); err != nil {
		return err
	}
	return mount("", target, "", syscall.MS_BIND|syscall.MS_REMOUNT|syscall.MS_RDONLY, "")
}

// setup runs in the new namespaces; Go's runtime already made every mount
// private (Unshareflags CLONE_NEWNS), so nothing here is seen outside.
func (c *podInit) setup() error {
	if err := syscall.Sethostname([]byte(c.Hostname)); err != nil {
		return fmt.Errorf("sethostname: %v", err)
	}
	if c.MountProc {
		if err := mount("proc", "/proc", "proc", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, ""); err != nil {
			return err
		}
	}
	// A fresh /run (as in a container image) gives room for the
	// service-account mount point without touching the host.
	if err := mount("tmpfs", "/run", "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "mode=755"); err != nil {
		return err
	}
	if real, err := filepath.EvalSymlinks("/var/run"); err == nil && real != "/run" {
		if err := mount("tmpfs", "/var/run", "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "mode=755"); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(ServiceAccountPath, 0o755); err != nil {
		return err
	}
	if err := bindRO(c.SADir, ServiceAccountPath); err != nil {
		return err
	}
	if err := bindRO(c.Hosts, "/etc/hosts"); err != nil {
		return err
	}
	return c.setupDev()
}

// setupDev gives the container its own /dev with the usual devices, so the
// kubelet-style /dev/termination-log mount does not touch the host's /dev.
func (c *podInit) setupDev() error {
	hostDev := "/run/.host-dev"
	if err := os.Mkdir(hostDev, 0o700); err != nil {
		return err
	}
	if err := mount("/dev", hostDev, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
		return err
	}
	if err := mount("tmpfs", "/dev", "tmpfs", syscall.MS_NOSUID, "mode=755"); err != nil {
		return err
	}
	for _, d := range hostDevices {
		src := filepath.Join(hostDev, d)
		if _, err := os.Stat(src); err != nil {
			continue
		}
		if err := os.WriteFile(filepath.Join("/dev", d), nil, 0o666); err != nil {
			return err
		}
		if err := mount(src, filepath.Join("/dev", d), "", syscall.MS_BIND, ""); err != nil {
			return err
		}
	}
	for _, dir := range []string{"pts", "shm"} {
		if err := os.Mkdir(filepath.Join("/dev", dir), 0o755); err != nil {
			return err
		}
	}
	if err := mount(filepath.Join(hostDev, "pts"), "/dev/pts", "", syscall.MS_BIND, ""); err != nil {
		return err
	}
	if err := mount("shm", "/dev/shm", "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "mode=1777"); err != nil {
		return err
	}
	links := map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
		"stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx"}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join("/dev", name)); err != nil {
			return err
		}
	}
	if err := syscall.Unmount(hostDev, syscall.MNT_DETACH); err != nil {
		return fmt.Errorf("unmount %s: %v", hostDev, err)
	}
	os.Remove(hostDev)
	if c.TermLog != "" {
		if err := os.WriteFile("/dev/termination-log", nil, 0o666); err != nil {
			return err
		}
		if err := mount(c.TermLog, "/dev/termination-log", "", syscall.MS_BIND, ""); err != nil {
			return err
		}
	}
	return nil
}
