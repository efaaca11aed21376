package node

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The node's network: a bridge in the node's own network namespace whose
// address is both the node IP and the Pods' gateway. Nothing routes out of
// that namespace, so no packet of the suite reaches another host.
const (
	NodeName  = "e2e-node"
	NodeIP    = "10.244.0.1"
	PodSubnet = "10.244.0.0/24"
	bridge    = "cni0"
	idPrefix  = "proa-e2e-node-"
)

// packages are the Debian packages the node needs, each with a file that
// shows it is installed. busybox-static gives the examples' stand-in
// application image a real sh and wget.
var packages = []struct{ name, file string }{
	{"containerd", "/usr/bin/containerd"},
	{"runc", "/usr/sbin/runc"},
	{"containernetworking-plugins", "/usr/lib/cni/bridge"},
	{"iptables", "/usr/sbin/iptables"},
	{"busybox-static", "/bin/busybox"},
	{"iproute2", "/usr/sbin/ip"},
}

// Busybox is where busybox-static installs its binary.
const Busybox = "/bin/busybox"

// preflight says why this machine cannot run the node, or "" if it can.
func preflight() string {
	if os.Geteuid() != 0 {
		return "needs root (a network namespace, mounts, cgroups, containerd and the kubelet)"
	}
	fs, _ := os.ReadFile("/proc/filesystems")
	if !strings.Contains(string(fs), "\toverlay\n") {
		return "the kernel has no overlay file system (containerd's overlayfs snapshotter needs it)"
	}
	if len(cgroupV1Roots()) == 0 {
		return "no cgroup v1 hierarchies are mounted under /sys/fs/cgroup (this harness runs the kubelet on cgroup v1 with the cgroupfs driver)"
	}
	for _, tool := range []string{"nsenter", "mount", "apt-get"} {
		if _, err := exec.LookPath(tool); err != nil {
			return "no " + tool + " command"
		}
	}
	return ""
}

// ensurePackages installs the missing Debian packages (apt-get update, then
// install), as CI does on a fresh machine.
func ensurePackages(log io.Writer) error {
	var missing []string
	for _, p := range packages {
		if _, err := os.Stat(p.file); err != nil {
			missing = append(missing, p.name)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	fmt.Fprintf(log, "proa-e2e-node: installing Debian packages %s\n", strings.Join(missing, " "))
	start := time.Now()
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	for _, args := range [][]string{{"update", "-qq"}, append([]string{"install", "-y", "-qq", "--no-install-recommends"}, missing...)} {
		cmd := exec.Command("apt-get", args...)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("apt-get %s: %v\n%s", strings.Join(args, " "), err, lastLines(string(out), 20))
		}
	}
	for _, p := range packages {
		if _, err := os.Stat(p.file); err != nil {
			return fmt.Errorf("package %s installed, but %s is missing", p.name, p.file)
		}
	}
	fmt.Fprintf(log, "proa-e2e-node: packages installed in %s\n", time.Since(start).Round(time.Second))
	return nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// cgroupV1Roots lists the mount points of the cgroup hierarchies: every v1
// hierarchy (cpu, memory, pids, name=systemd, ...) and, on a hybrid
// machine, the cgroup2 one beside them.
func cgroupV1Roots() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var v1, v2 []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS ... - FSTYPE SOURCE SUPEROPTS
		l := sc.Text()
		dash := strings.Index(l, " - ")
		if dash < 0 {
			continue
		}
		left, right := strings.Fields(l[:dash]), strings.Fields(l[dash+3:])
		if len(left) < 5 || len(right) < 1 {
			continue
		}
		switch right[0] {
		case "cgroup":
			v1 = append(v1, left[4])
		case "cgroup2":
			v2 = append(v2, left[4])
		}
	}
	if len(v1) == 0 {
		return nil
	}
	return append(v1, v2...)
}

// createCgroup makes the cgroup path (e.g. /proa-e2e-node-123/node) in every
// hierarchy; in cpuset, each new level gets its parent's CPUs and memory
// nodes, without which no process could join.
func createCgroup(path string) error {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	for _, root := range cgroupV1Roots() {
		dir := root
		for _, part := range parts {
			parent := dir
			dir = filepath.Join(dir, part)
			if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
				return fmt.Errorf("creating cgroup %s: %w", dir, err)
			}
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				cur, err := os.ReadFile(filepath.Join(dir, f))
				if err != nil || strings.TrimSpace(string(cur)) != "" {
					continue
				}
				b, _ := os.ReadFile(filepath.Join(parent, f))
				if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
					return fmt.Errorf("setting %s of cgroup %s: %w", f, dir, err)
				}
			}
		}
	}
	return nil
}

// joinCgroup moves process pid into path in every hierarchy, so that what
// it starts (containerd's shims) is found there at clean-up.
func joinCgroup(path string, pid int) error {
	for _, root := range cgroupV1Roots() {
		if err := os.WriteFile(filepath.Join(root, path, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			return fmt.Errorf("moving PID %d into cgroup %s%s: %w", pid, root, path, err)
		}
	}
	return nil
}

// cgroupPIDs lists every process in the cgroup path or below it, in any
// hierarchy.
func cgroupPIDs(path string) []int {
	var pids []int
	for _, root := range cgroupV1Roots() {
		filepath.WalkDir(filepath.Join(root, path), func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			b, _ := os.ReadFile(p)
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && !slices.Contains(pids, pid) {
					pids = append(pids, pid)
				}
			}
			return nil
		})
	}
	return pids
}

// killCgroup kills every process in the cgroup path (ours: the node's
// processes, containerd's shims and every container), until none is left
// or the time is up, then removes the cgroups, deepest first.
func killCgroup(path string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		pids := cgroupPIDs(path)
		if len(pids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v still in cgroup %s after %s", pids, path, limit)
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var errs []error
	for _, root := range cgroupV1Roots() {
		var dirs []string
		filepath.WalkDir(filepath.Join(root, path), func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		slices.Reverse(dirs) // children before parents
		for _, d := range dirs {
			var err error
			for range 50 { // a cgroup stays busy for a moment after its last process exited
				if err = syscall.Rmdir(d); err == nil || errors.Is(err, syscall.ENOENT) {
					err = nil
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("removing cgroup %s: %w", d, err))
			}
		}
	}
	return errors.Join(errs...)
}

// run runs a command, returning its combined output in the error.
func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// createNetns makes the named network namespace with loopback up and the
// bridge holding the node IP.
func createNetns(name string) error {
	if err := run("ip", "netns", "add", name); err != nil {
		return err
	}
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", bridge, "type", "bridge"},
		{"addr", "add", NodeIP + "/24", "dev", bridge},
		{"link", "set", bridge, "up"},
	} {
		if err := run("ip", append([]string{"-n", name}, args...)...); err != nil {
			return err
		}
	}
	return nil
}

// alive reports whether pid runs (a zombie does not count: this machine's
// init reaps orphans only every few seconds).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] != 'Z' && s[i+2] != 'X'
}

// hostDirs are paths that containerd, runc, the CNI plugins and the kubelet
// use whatever their configuration says. The node's mount namespace covers
// each with a tmpfs of its own; those missing on the host are created
// first, and removed again at clean-up.
var hostDirs = []string{"/run/containerd", "/var/lib/cni", "/var/log/containers", "/run/netns"}

// sweep removes what earlier runs left when they were killed: cgroups,
// network namespaces and working directories whose owner (the PID in their
// name) no longer runs.
func sweep(log io.Writer) {
	stale := func(name string) bool {
		pid, err := strconv.Atoi(strings.TrimPrefix(name, idPrefix))
		return err == nil && strings.HasPrefix(name, idPrefix) && !alive(pid)
	}
	var ids []string
	for _, root := range cgroupV1Roots() {
		ents, _ := os.ReadDir(root)
		for _, e := range ents {
			if e.IsDir() && stale(e.Name()) && !slices.Contains(ids, e.Name()) {
				ids = append(ids, e.Name())
			}
		}
	}
	ents, _ := os.ReadDir("/run/netns")
	for _, e := range ents {
		if stale(e.Name()) && !slices.Contains(ids, e.Name()) {
			ids = append(ids, e.Name())
		}
	}
	for _, id := range ids {
		fmt.Fprintf(log, "proa-e2e-node: removing what a killed run left: %s\n", id)
		if err := killCgroup("/"+id, 10*time.Second); err != nil {
			fmt.Fprintln(log, "proa-e2e-node:", err)
		}
		if _, err := os.Stat("/run/netns/" + id); err == nil {
			if err := run("ip", "netns", "delete", id); err != nil {
				fmt.Fprintln(log, "proa-e2e-node:", err)
			}
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), idPrefix+"*"))
	for _, d := range dirs {
		if name := filepath.Base(d); stale(strings.SplitN(name, ".", 2)[0]) {
			os.RemoveAll(d)
		}
	}
}
