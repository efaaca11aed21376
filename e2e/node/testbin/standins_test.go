package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestCloudSQLProxy(t *testing.T) {
	// examples/job.yaml's arguments.
	example := []string{"--quitquitquit", "--health-check", "--http-address=0.0.0.0", "--exit-zero-on-sigterm",
		"--structured-logs", "--port=5432", "my-project:europe-west1:my-instance"}
	for _, tc := range []struct {
		name    string
		args    []string
		want    sidecar
		wantErr string
	}{
		{"example", example, sidecar{name: "cloud-sql-proxy", addr: "0.0.0.0:9090", readyPath: "/readiness",
			okPaths: []string{"/startup", "/liveness"}, quitAddr: "127.0.0.1:9091",
			quit: []string{"GET /quitquitquit", "POST /quitquitquit"}, listen: []string{"127.0.0.1:5432"}}, ""},
		// Health on localhost only (the kubelet's probe cannot reach it), no
		// admin server, SIGTERM is 143.
		{"defaults", []string{"p:r:i"}, sidecar{name: "cloud-sql-proxy", termCode: 143,
			listen: []string{"127.0.0.1:5432"}}, ""},
		{"flags after the instance", []string{"p:r:i", "--health-check", "-p", "3306", "--http-port", "8090"},
			sidecar{name: "cloud-sql-proxy", termCode: 143, addr: "localhost:8090", readyPath: "/readiness",
				okPaths: []string{"/startup", "/liveness"}, listen: []string{"127.0.0.1:3306"}}, ""},
		{"unknown flag", []string{"--bogus", "p:r:i"}, sidecar{}, "flag provided but not defined: -bogus"},
		{"no instance", []string{"--health-check"}, sidecar{}, "missing instance connection name"},
		{"bad instance", []string{"p:i"}, sidecar{}, `invalid instance connection name "p:i"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := cloudSQLProxy(tc.args)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("sidecar\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// examples/kill-mode.yaml's ConfigMap.
const fluentBitExample = `service:
  flush: 1
  # Time to flush after SIGTERM before exiting.
  grace: 5
  http_server: on
  http_listen: 0.0.0.0
  http_port: 2020
  health_check: on
pipeline:
  inputs:
    - name: tail
      path: /var/log/app/*.log
      read_from_head: true
  outputs:
    - name: stdout
      match: "*"
`

func TestParseFluentBitYAML(t *testing.T) {
	got, err := parseFluentBitYAML(fluentBitExample)
	if err != nil {
		t.Fatal(err)
	}
	want := fluentBitConfig{
		service: map[string]string{"flush": "1", "grace": "5", "http_server": "on", "http_listen": "0.0.0.0",
			"http_port": "2020", "health_check": "on"},
		inputs: []map[string]string{{"name": "tail", "path": "/var/log/app/*.log", "read_from_head": "true"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("config\n got %+v\nwant %+v", got, want)
	}
	for _, bad := range []string{"service: on\n", "- service:\n", "service:\n  flush\n"} {
		if _, err := parseFluentBitYAML(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestFluentBit(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	example := strings.ReplaceAll(fluentBitExample, "/var/log/app", filepath.Join(dir, "logs"))
	s, tl, err := fluentBit([]string{"-c", write("example.yaml", example)})
	if err != nil {
		t.Fatal(err)
	}
	if s.addr != "0.0.0.0:2020" || s.readyPath != "/api/v1/health" || len(s.quit) != 0 {
		t.Errorf("addr %q, ready path %q, quit %q; want 0.0.0.0:2020, /api/v1/health, none", s.addr, s.readyPath, s.quit)
	}
	if len(tl.globs) != 1 || !tl.globs[0].fromHead {
		t.Errorf("globs %+v, want one read from its head", tl.globs)
	}

	// Without health_check, no health endpoint; without http_server, no server.
	for _, tc := range []struct{ from, to, addr, ready string }{
		{"health_check: on", "health_check: off", "0.0.0.0:2020", ""},
		{"http_server: on", "http_server: off", "", ""},
	} {
		s, _, err := fluentBit([]string{"--config=" + write("c.yaml", strings.Replace(example, tc.from, tc.to, 1))})
		if err != nil {
			t.Fatal(err)
		}
		if s.addr != tc.addr || s.readyPath != tc.ready {
			t.Errorf("%s: addr %q, ready path %q; want %q, %q", tc.to, s.addr, s.readyPath, tc.addr, tc.ready)
		}
	}
	for _, tc := range []struct {
		args    []string
		wantErr string
	}{
		{nil, "want -c FILE.yaml"},
		{[]string{"-c", write("a.conf", "")}, "YAML configurations only"},
		{[]string{"-R", "parsers.conf", "-c", "x.yaml"}, "flag provided but not defined: -R"},
		{[]string{"-c", filepath.Join(dir, "missing.yaml")}, "no such file"},
		{[]string{"-c", write("d.yaml", "pipeline:\n  inputs:\n    - name: dummy\n")}, `name "dummy"`},
	} {
		if _, _, err := fluentBit(tc.args); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%q: error %v, want one containing %q", tc.args, err, tc.wantErr)
		}
	}
}

func TestTailer(t *testing.T) {
	dir := t.TempDir()
	old, log := filepath.Join(dir, "old.log"), filepath.Join(dir, "job.log")
	if err := os.WriteFile(old, []byte("before the start\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var got []string
	tl := &tailer{globs: []tailGlob{{filepath.Join(dir, "*.log"), false}}, offsets: map[string]int64{},
		emit: func(path, line string) { got = append(got, filepath.Base(path)+": "+line) }}
	tl.scan(true)
	appendTo := func(path, text string) {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(text)
		f.Close()
	}
	appendTo(old, "old 1\n")
	appendTo(log, "step 1\nstep 2\nhalf a ")
	tl.scan(false)
	appendTo(log, "line\n")
	tl.scan(false)
	tl.scan(false)
	want := []string{"job.log: step 1", "job.log: step 2", "old.log: old 1", "job.log: half a line"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("records\n got %q\nwant %q", got, want)
	}
}
