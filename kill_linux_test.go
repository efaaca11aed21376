package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestReadProcesses(t *testing.T) {
	got, err := readProcesses("testdata/proc")
	if err != nil {
		t.Fatal(err)
	}
	want := []process{
		{pid: 1, ppid: 0, state: 'S', start: 100, exe: "pause"},
		{pid: 10, ppid: 9, state: 'S', start: 230, exe: "run"},
		{pid: 11, ppid: 10, state: 'S', start: 240, exe: "sh"},
		{pid: 12, ppid: 1, state: 'Z', start: 250},
		{pid: 13, ppid: 1, state: 'S', start: 260},
		{pid: 15, ppid: 1, state: 'S', start: 270, exe: "sh"},
		// exe unreadable: named by argv[0] and comm instead
		{pid: 16, ppid: 1, state: 'S', start: 280, argv0: "envoy", comm: "envoy"},
		{pid: 17, ppid: 1, state: 'S', start: 290, argv0: "nginx -g daemon off;", comm: "nginx"},
		{pid: 18, ppid: 1, state: 'S', start: 300, argv0: "otelcol", comm: "otel-collector-"},
		{pid: 7, ppid: 0, state: 'S', start: 200, exe: "envoy"}, // a container's first process: its parent is outside
		{pid: 8, ppid: 1, state: 'S', start: 210, exe: "pilot-agent"},
		{pid: 9, ppid: 1, state: 'S', start: 220, exe: "proa"},
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(process{})); diff != "" {
		t.Errorf("readProcesses (-want +got):\n%s", diff)
	}
}

func TestParseStat(t *testing.T) {
	tests := []struct {
		in   string
		want process
		ok   bool
	}{
		{"42 (a b) c)) R 7 42 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 999 0 0", process{pid: 42, ppid: 7, state: 'R', start: 999}, true},
		{"2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 9 0 0", process{pid: 2, kthread: true, state: 'S', start: 9}, true},
		{"42 (x) R 7", process{}, false},
		{"42 x R 7 42 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 999 0 0", process{}, false},
		{"", process{}, false},
		{"abc (x) R 7 42 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 999 0 0", process{}, false},
	}
	for _, tt := range tests {
		got, ok := parseStat([]byte(tt.in))
		if ok != tt.ok || got != tt.want {
			t.Errorf("parseStat(%q) = %+v, %v; want %+v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestKillTargets(t *testing.T) {
	procs, err := readProcesses("testdata/proc")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		names []string
		all   bool
		want  []int
		match []string // the rule for each
	}{
		{"by name, never proa's descendants", []string{"envoy", "sh"}, false, []int{15, 16, 7}, []string{"exe", "argv0", "exe"}},
		{"a name that matches nothing", []string{"haproxy"}, false, nil, nil},
		{"a readable exe decides: pilot-agent's comm is different", []string{"pilot-agent", "pilot agent) (x"}, false, []int{8}, []string{"exe"}},
		{"proa cannot name itself or PID 1", []string{"proa", "pause"}, false, nil, nil},
		{"unreadable exe: argv[0]'s base name", []string{"otelcol"}, false, []int{18}, []string{"argv0"}},
		{"unreadable exe: comm when argv[0] was rewritten", []string{"nginx"}, false, []int{17}, []string{"comm"}},
		{"unreadable exe: comm holds the first 15 bytes of a longer name", []string{"otel-collector-contrib"}, false, []int{18}, []string{"comm"}},
		{"unreadable exe, nothing else to go by", []string{"secret"}, false, nil, nil},
		{"all: never PID 1, proa, its descendants or zombies; unreadable exe included", nil, true, []int{13, 15, 16, 17, 18, 7, 8},
			[]string{"kill-all", "kill-all", "kill-all", "kill-all", "kill-all", "kill-all", "kill-all"}},
		{"all, with names: the rule that named it", []string{"envoy"}, true, []int{13, 15, 16, 17, 18, 7, 8},
			[]string{"kill-all", "kill-all", "argv0", "kill-all", "kill-all", "exe", "kill-all"}},
	}
	for _, tt := range tests {
		got, err := killTargets(procs, 9, tt.names, tt.all)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if diff := cmp.Diff(tt.want, pids(got)); diff != "" {
			t.Errorf("%s: targets (-want +got):\n%s", tt.name, diff)
		}
		var match []string
		for _, p := range got {
			match = append(match, p.match)
		}
		if diff := cmp.Diff(tt.match, match); diff != "" {
			t.Errorf("%s: rules (-want +got):\n%s", tt.name, diff)
		}
	}
}

func TestKillTargetsRefusesHostPIDNamespace(t *testing.T) {
	procs, err := readProcesses("testdata/proc-host")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := killTargets(procs, 500, []string{"envoy"}, false); err != errHostPID || got != nil {
		t.Errorf("killTargets = %v, %v; want errHostPID", got, err)
	}
	if _, err := killTargets(procs, 500, nil, true); err != errHostPID {
		t.Errorf("kill-all: err = %v, want errHostPID", err)
	}
}

// A process the walk saw may exit, and its PID go to another process,
// before the signal: proa must never signal that one. signalProcess pins
// the process with a pidfd and checks its start time; without pidfds
// (ENOSYS, or EPERM from a seccomp profile) it checks, then uses kill.
func TestSignalProcessNeverReachesAReusedPID(t *testing.T) {
	real := pidfdOpen
	t.Cleanup(func() { pidfdOpen = real })
	for _, missing := range []error{nil, syscall.ENOSYS, syscall.EPERM} {
		t.Run(fmt.Sprint("pidfd_open error ", missing), func(t *testing.T) {
			opened := 0
			pidfdOpen = func(pid int) (int, error) {
				opened++
				if missing != nil {
					return -1, missing
				}
				return real(pid)
			}
			dir := t.TempDir()
			ready, record := filepath.Join(dir, "ready"), filepath.Join(dir, "record")
			cmd := exec.Command(testBinary(t), "signals", ready, record, "0")
			cmd.Env = cleanEnv("PROA_TEST_AS=child")
			l := launch(t, cmd)
			l.await(ready)
			p, ok := readProcess(procRoot, cmd.Process.Pid)
			if !ok {
				t.Fatal("cannot read the child's /proc entry")
			}
			reused := p
			reused.start++ // the walk saw an earlier process with this PID
			if err := signalProcess(procRoot, reused, syscall.SIGUSR1); !errors.Is(err, errPIDReused) {
				t.Errorf("signalling a reused PID: err = %v, want errPIDReused", err)
			}
			if err := signalProcess(procRoot, p, syscall.SIGUSR2); err != nil {
				t.Errorf("signalling the process walked: %v", err)
			}
			if code := l.exitCode(); code != 0 {
				t.Fatalf("child exited %d", code)
			}
			if b, _ := os.ReadFile(record); string(b) != "user defined signal 2" {
				t.Errorf("the child received %q, want only SIGUSR2", b)
			}
			if opened != 2 {
				t.Errorf("pidfd_open called %d times, want 2", opened)
			}
			if err := signalProcess(procRoot, p, syscall.SIGUSR2); !errors.Is(err, syscall.ESRCH) {
				t.Errorf("signalling an exited process: err = %v, want ESRCH", err)
			}
		})
	}
}
