package main

import (
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
	}{
		{"by name, never proa's descendants", []string{"envoy", "sh"}, false, []int{15, 7}},
		{"a name that matches nothing", []string{"nginx"}, false, nil},
		{"not by comm: pilot-agent's comm is different", []string{"pilot-agent"}, false, []int{8}},
		{"proa cannot name itself or PID 1", []string{"proa", "pause"}, false, nil},
		{"all: never PID 1, proa, its descendants or zombies; unreadable exe included", nil, true, []int{13, 15, 7, 8}},
	}
	for _, tt := range tests {
		got, err := killTargets(procs, 9, tt.names, tt.all)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if diff := cmp.Diff(tt.want, pids(got)); diff != "" {
			t.Errorf("%s: targets (-want +got):\n%s", tt.name, diff)
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
