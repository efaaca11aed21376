package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// mkpod builds a Pod from a compact description: containers "main,envoy",
// native sidecars "log", and statuses like `"envoy":{"ready":true,"state":{"running":{}}}`.
func mkpod(t testing.TB, policy, containers, natives, statuses string) *pod {
	t.Helper()
	var spec, init []string
	for _, c := range strings.Split(containers, ",") {
		name, own, _ := strings.Cut(c, "=") // "envoy=Never" sets the container's own restartPolicy
		spec = append(spec, fmt.Sprintf(`{"name":%q,"restartPolicy":%q}`, name, own))
	}
	for _, c := range strings.Split(natives, ",") {
		if c != "" {
			init = append(init, fmt.Sprintf(`{"name":%q,"restartPolicy":"Always"}`, c))
		}
	}
	init = append(init, `{"name":"setup"}`) // a plain init container never counts
	var regular, native []string
	if statuses != "-" {
		for _, s := range splitStatuses(statuses) {
			name, body, _ := strings.Cut(s, ":")
			entry := fmt.Sprintf(`{"name":%s,%s`, name, strings.TrimPrefix(body, "{"))
			if strings.Contains(","+natives+",", ","+strings.Trim(name, `"`)+",") {
				native = append(native, entry)
			} else {
				regular = append(regular, entry)
			}
		}
	}
	status := fmt.Sprintf(`"containerStatuses":[%s],"initContainerStatuses":[%s]`, strings.Join(regular, ","), strings.Join(native, ","))
	if statuses == "-" {
		status = `"phase":"Pending"`
	}
	js := fmt.Sprintf(`{"metadata":{"name":"job-1","namespace":"ns","uid":"u1"},"spec":{"restartPolicy":%q,"containers":[%s],"initContainers":[%s]},"status":{%s}}`,
		policy, strings.Join(spec, ","), strings.Join(init, ","), status)
	p := new(pod)
	if err := json.Unmarshal([]byte(js), p); err != nil {
		t.Fatalf("mkpod: %v\n%s", err, js)
	}
	return p
}

// splitStatuses splits `"a":{...},"b":{...}` at the top level.
func splitStatuses(s string) []string {
	var out []string
	depth, start := 0, 0
	for i, r := range s {
		switch r {
		case '{':
			depth++
		case '}':
			depth--
		case ',':
			if depth == 0 {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	if s != "" {
		out = append(out, s[start:])
	}
	return out
}

const (
	ready              = `{"ready":true,"state":{"running":{}}}`
	running            = `{"ready":false,"state":{"running":{}}}`
	creating           = `{"ready":false,"state":{"waiting":{"reason":"ContainerCreating"}}}`
	noState            = `{"ready":false,"state":{}}`
	exited0            = `{"ready":false,"state":{"terminated":{"exitCode":0}}}`
	exited1            = `{"ready":false,"state":{"terminated":{"exitCode":1}}}`
	readyAndTerminated = `{"ready":true,"state":{"terminated":{"exitCode":1}}}`
)

func TestReadiness(t *testing.T) {
	tests := []struct {
		name               string
		policy, containers string
		natives, statuses  string
		wantNotReady       []string
		wantFailed         string
	}{
		{"statuses missing: wait", "Never", "main,envoy", "", "-",
			[]string{"envoy: no status yet"}, ""},
		{"sidecar has no status yet: wait (Rust proa called an empty list ready)", "Never", "main,envoy", "", "",
			[]string{"envoy: no status yet"}, ""},
		{"only proa's own container: ready whatever its state", "Never", "main", "", `"main":` + creating,
			nil, ""},
		{"all sidecars ready", "Never", "main,envoy,proxy", "", `"main":` + running + `,"envoy":` + ready + `,"proxy":` + ready,
			nil, ""},
		{"one sidecar not ready: wait", "Never", "main,envoy,proxy", "", `"envoy":` + ready + `,"proxy":` + running,
			[]string{"proxy: running, not ready"}, ""},
		{"waiting reason is reported", "Always", "main,envoy", "", `"envoy":` + creating,
			[]string{"envoy: waiting (ContainerCreating)"}, ""},
		{"no state at all is waiting", "Always", "main,envoy", "", `"envoy":` + noState,
			[]string{"envoy: waiting"}, ""},
		{"terminated under Never fails", "Never", "main,envoy", "", `"envoy":` + exited1,
			nil, "sidecar envoy terminated with exit code 1 before it was ready, and restartPolicy Never will not restart it"},
		{"terminated with 0 under Never fails", "Never", "main,envoy", "", `"envoy":` + exited0,
			nil, "sidecar envoy terminated with exit code 0 before it was ready, and restartPolicy Never will not restart it"},
		{"terminated with 0 under OnFailure fails (Rust proa waited forever)", "OnFailure", "main,envoy", "", `"envoy":` + exited0,
			nil, "sidecar envoy terminated with exit code 0 before it was ready, and restartPolicy OnFailure will not restart it"},
		{"terminated with 1 under OnFailure waits for the restart", "OnFailure", "main,envoy", "", `"envoy":` + exited1,
			[]string{"envoy: terminated with exit code 1, waiting for a restart"}, ""},
		{"terminated under Always waits for the restart", "Always", "main,envoy", "", `"envoy":` + exited0,
			[]string{"envoy: terminated with exit code 0, waiting for a restart"}, ""},
		{"missing restartPolicy means Always", "", "main,envoy", "", `"envoy":` + exited1,
			[]string{"envoy: terminated with exit code 1, waiting for a restart"}, ""},
		{"terminated takes precedence over ready", "Never", "main,envoy", "", `"envoy":` + readyAndTerminated,
			nil, "sidecar envoy terminated with exit code 1 before it was ready, and restartPolicy Never will not restart it"},
		{"a container's own restartPolicy wins over the Pod's", "Always", "main,envoy=Never", "", `"envoy":` + exited1,
			nil, "sidecar envoy terminated with exit code 1 before it was ready, and restartPolicy Never will not restart it"},
		{"native sidecar not ready: wait", "Never", "main", "log", `"log":` + running,
			[]string{"log: running, not ready"}, ""},
		{"native sidecar without status: wait", "Never", "main", "log", `"main":` + running,
			[]string{"log: no status yet"}, ""},
		{"native sidecar ready", "Never", "main,envoy", "log", `"log":` + ready + `,"envoy":` + ready,
			nil, ""},
		{"native sidecar terminated is always restarted, even under Never", "Never", "main", "log", `"log":` + exited0,
			[]string{"log: terminated with exit code 0, waiting for a restart"}, ""},
		{"several not ready, in spec order", "Never", "main,a,b", "c", `"a":` + running,
			[]string{"a: running, not ready", "b: no status yet", "c: no status yet"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mkpod(t, tt.policy, tt.containers, tt.natives, tt.statuses)
			notReady, failed := readiness(p, sidecarsOf(p, "main"))
			if diff := cmp.Diff(tt.wantNotReady, notReady); diff != "" {
				t.Errorf("notReady (-want +got):\n%s", diff)
			}
			if failed != tt.wantFailed {
				t.Errorf("failed = %q, want %q", failed, tt.wantFailed)
			}
		})
	}
}

func TestStillRunning(t *testing.T) {
	tests := []struct {
		name                string
		containers, natives string
		statuses            string
		want                []string
	}{
		{"all sidecars terminated", "main,envoy,proxy", "", `"main":` + running + `,"envoy":` + exited0 + `,"proxy":` + exited1, nil},
		{"one still running", "main,envoy,proxy", "", `"envoy":` + exited0 + `,"proxy":` + ready, []string{"proxy"}},
		{"no status counts as running", "main,envoy", "", `"main":` + running, []string{"envoy"}},
		{"proa's own container is not waited for", "main", "", `"main":` + running, nil},
		{"native sidecars are not waited for", "main,envoy", "log", `"envoy":` + exited0 + `,"log":` + ready, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mkpod(t, "Never", tt.containers, tt.natives, tt.statuses)
			if diff := cmp.Diff(tt.want, stillRunning(p, sidecarsOf(p, "main"))); diff != "" {
				t.Errorf("stillRunning (-want +got):\n%s", diff)
			}
		})
	}
}

const mountinfoSample = `1497 1416 0:361 / / rw,relatime master:470 - overlay overlay rw,lowerdir=/var/lib/containerd/a
1500 1497 0:363 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
1510 1497 254:1 /var/lib/kubelet/pods/u1/etc-hosts /etc/hosts rw,relatime - ext4 /dev/vda1 rw
1511 1500 254:1 /var/lib/kubelet/pods/u1/containers/app/0a1b2c3d /dev/termination-log rw,relatime - ext4 /dev/vda1 rw
1512 1497 0:355 / /var/run/secrets/kubernetes.io/serviceaccount ro,relatime - tmpfs tmpfs rw,size=4096k
`

func TestContainerFromMountinfo(t *testing.T) {
	tests := []struct {
		name, mountinfo, uid, want string
	}{
		{"kubelet termination-log mount", mountinfoSample, "u1", "app"},
		{"kubelet on its own partition", "1511 1500 254:1 /pods/u1/containers/main/ffff /dev/termination-log rw - ext4 /dev/vdb rw\n", "u1", "main"},
		{"another pod's uid", mountinfoSample, "u2", ""},
		{"no uid known", mountinfoSample, "", ""},
		{"two different names is ambiguous", mountinfoSample + "9 1 254:1 /var/lib/kubelet/pods/u1/containers/other/1 /x rw - ext4 /dev/vda1 rw\n", "u1", ""},
		{"the same name twice is fine", mountinfoSample + "9 1 254:1 /var/lib/kubelet/pods/u1/containers/app/2 /y rw - ext4 /dev/vda1 rw\n", "u1", "app"},
		{"not in a pod", "22 1 0:21 / /proc rw - proc proc rw\n", "u1", ""},
		{"empty", "", "u1", ""},
	}
	for _, tt := range tests {
		if got := containerFromMountinfo(tt.mountinfo, tt.uid); got != tt.want {
			t.Errorf("%s: containerFromMountinfo = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestOwnContainer(t *testing.T) {
	p := mkpod(t, "Never", "main,app,envoy", "", "")
	tests := []struct {
		name      string
		container string
		from      string
		mountinfo string
		want      string
		wantRule  string
		wantErr   string
	}{
		{"first container by default", "", "", "", "main", "first container", ""},
		{"detected from mountinfo", "", "", mountinfoSample, "app", "mountinfo", ""},
		{"flag wins over mountinfo", "envoy", "--container", mountinfoSample, "envoy", "--container", ""},
		{"env", "envoy", "PROA_CONTAINER_NAME", "", "envoy", "PROA_CONTAINER_NAME", ""},
		{"unknown name", "nope", "--container", "", "", "",
			`--container names container "nope", but Pod ns/job-1 has only app, envoy, main`},
		{"mountinfo naming an unknown container falls back", "", "", "1 1 1:1 /pods/u1/containers/ghost/1 /dev/termination-log rw - ext4 x rw\n", "main", "first container", ""},
	}
	for _, tt := range tests {
		c := &config{container: tt.container, containerFrom: tt.from}
		got, rule, err := ownContainer(p, c, tt.mountinfo)
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("%s: err = %v, want %s", tt.name, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want || rule != tt.wantRule {
			t.Errorf("%s: ownContainer = %q, %q, %v; want %q, %q", tt.name, got, rule, err, tt.want, tt.wantRule)
		}
	}
}

func TestShutdownDeadline(t *testing.T) {
	grace := func(n int64) *pod {
		p := new(pod)
		p.Spec.TerminationGracePeriodSeconds = &n
		return p
	}
	tests := []struct {
		name string
		c    config
		p    *pod
		want string
	}{
		{"flag", config{shutdownTimeout: 5e9, shutdownTimeoutOK: true}, grace(60), "5s"},
		{"flag zero", config{shutdownTimeoutOK: true}, grace(60), "0s"},
		{"grace period", config{}, grace(60), "1m0s"},
		{"grace period zero", config{}, grace(0), "0s"},
		{"no pod", config{}, nil, "30s"},
		{"no grace period", config{}, new(pod), "30s"},
	}
	for _, tt := range tests {
		if got := shutdownDeadline(&tt.c, tt.p).String(); got != tt.want {
			t.Errorf("%s: shutdownDeadline = %s, want %s", tt.name, got, tt.want)
		}
	}
}

// sidecarsOf is splitContainers without --sidecar.
func sidecarsOf(p *pod, self string) []sidecar {
	s, _ := splitContainers(p, self, nil)
	return s
}

func TestSplitContainers(t *testing.T) {
	p := mkpod(t, "Never", "main,worker,envoy,proxy", "log,metrics", "")
	tests := []struct {
		only                []string
		wantSidecars, peers []string
	}{
		{nil, []string{"envoy", "log", "metrics", "proxy", "worker"}, nil},
		{[]string{"envoy", "log"}, []string{"envoy", "log"}, []string{"proxy", "worker"}},
	}
	for _, tt := range tests {
		sidecars, peers := splitContainers(p, "main", tt.only)
		name := func(s sidecar) string { return s.name }
		if got := names(sidecars, name); got != strings.Join(tt.wantSidecars, ", ") {
			t.Errorf("--sidecar %q: sidecars %s, want %q", tt.only, got, tt.wantSidecars)
		}
		if got := names(peers, name); got != strings.Join(tt.peers, ", ") {
			t.Errorf("--sidecar %q: peers %s, want %q", tt.only, got, tt.peers)
		}
	}
	for _, tt := range []struct {
		only []string
		want string
	}{
		{[]string{"envoy", "log"}, ""},
		{[]string{"main"}, "--sidecar main names proa's own container"},
		{[]string{"setup"}, "--sidecar setup is not a container of Pod ns/job-1: its sidecars can be envoy, log, metrics, proxy, worker"},
		{[]string{"envoy", "nginx"}, "--sidecar nginx is not a container of Pod ns/job-1: its sidecars can be envoy, log, metrics, proxy, worker"},
	} {
		err := checkSidecarNames(p, "main", tt.only)
		if (err == nil && tt.want != "") || (err != nil && err.Error() != tt.want) {
			t.Errorf("checkSidecarNames(%q) = %v, want %q", tt.only, err, tt.want)
		}
	}
}

func TestNotExitedSince(t *testing.T) {
	start := time.Date(2026, 11, 22, 0, 0, 9, 500e6, time.UTC) // shutdown began at 00:00:09.5
	last := func(finished string) string {
		return `{"ready":true,"restartCount":1,"state":{"running":{}},"lastState":{"terminated":{"exitCode":0,"finishedAt":"` + finished + `"}}}`
	}
	restarted := `{"ready":true,"restartCount":1,"state":{"running":{}}}`
	tests := []struct {
		name             string
		before, now      string // envoy's status
		natives, nativeS string
		want             []string
	}{
		{"still running", ready, ready, "", "", []string{"envoy"}},
		{"terminated", ready, exited0, "", "", nil},
		{"no status counts as running", "", "", "", "", []string{"envoy"}},
		{"restarted at once: restartCount grew", ready, `{"ready":false,"restartCount":1,"state":{"running":{}}}`, "", "", nil},
		{"restarted before shutdown: same restartCount", `{"ready":true,"restartCount":1,"state":{"running":{}}}`, `{"ready":true,"restartCount":1,"state":{"running":{}}}`, "", "", []string{"envoy"}},
		// restartCount 1 at the start too (a state older than the restart):
		// lastState decides.
		{"lastState ended after the start", restarted, last("2026-11-22T00:00:10Z"), "", "", nil},
		{"lastState ended in the start's second", restarted, last("2026-11-22T00:00:09Z"), "", "", nil},
		{"lastState ended before the start", restarted, last("2026-11-22T00:00:08Z"), "", "", []string{"envoy"}},
		{"native sidecars are not waited for", ready, exited0, "log", ready, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status := func(envoy string) string {
				var s []string
				if envoy != "" {
					s = append(s, `"envoy":`+envoy)
				}
				if tt.nativeS != "" {
					s = append(s, `"log":`+tt.nativeS)
				}
				return strings.Join(s, ",")
			}
			before := mkpod(t, "Never", "main,envoy", tt.natives, status(tt.before))
			now := mkpod(t, "Never", "main,envoy", tt.natives, status(tt.now))
			if diff := cmp.Diff(tt.want, notExitedSince(now, before, sidecarsOf(now, "main"), start)); diff != "" {
				t.Errorf("notExitedSince (-want +got):\n%s", diff)
			}
		})
	}
}

func TestOwnRestartPolicyAndDeletion(t *testing.T) {
	p := mkpod(t, "OnFailure", "main,envoy=Never,app=Always", "", "")
	for self, want := range map[string]string{"main": "OnFailure", "envoy": "Never", "app": "Always"} {
		if got := ownRestartPolicy(p, self); got != want {
			t.Errorf("ownRestartPolicy(%s) = %q, want %q", self, got, want)
		}
	}
	if _, deleting := p.deletion(); deleting {
		t.Error("a Pod without deletionTimestamp is being deleted")
	}
	p.Metadata.DeletionTimestamp = "2026-11-22T00:00:40Z"
	if due, deleting := p.deletion(); !deleting || !due.Equal(time.Date(2026, 11, 22, 0, 0, 40, 0, time.UTC)) {
		t.Errorf("deletion() = %s, %v", due, deleting)
	}
	var none *pod
	if _, deleting := none.deletion(); deleting {
		t.Error("no Pod is being deleted")
	}
}
