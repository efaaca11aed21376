package realnode

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"proa/e2e/cluster"
	"proa/e2e/harness"
	"proa/e2e/node"
)

// standIn is a local image that behaves, for the examples, like the image
// they name: the same command line (the examples' commands and args run as
// written), the same paths, ports and endpoints.
type standIn struct {
	prefix string // of the image reference in examples/*.yaml (docker.io/library/ is implied)
	ref    string // the local image
	// The local image is one of the node's images when exe is empty; else
	// it holds only the test program (node/testbin) at exe, whose base name
	// chooses its role, with this entrypoint and environment.
	exe        string
	entrypoint []string
	env        []string
	what       string // what it stands in for, and how
}

// standIns is the table of example images. To run an example that names a
// new image, add a line here (and, for a program with its own command
// line, a role to node/testbin).
func standIns() []standIn {
	return []standIn{
		{prefix: "registry.example.com/app-with-proa:", ref: node.BusyboxWithProaImage,
			what: "an application image with /proa (proa's image) and sh, echo, sleep, wget, tee (busybox)"},
		{prefix: "registry.example.com/proa:", ref: node.ProaImage, what: "proa's image (oci.ProaImage)"},
		{prefix: "busybox", ref: node.BusyboxImage, what: "Debian's static busybox"},
		{prefix: "python:3", ref: "proa-e2e.local/examples/python:3", exe: "usr/local/bin/python3",
			env: []string{"SIDECAR_NAME=python", "SIDECAR_ADDR=:8080", "SIDECAR_OK_PATHS=/started",
				"SIDECAR_READY_PATH=/ready", "SIDECAR_READY_AFTER=15s", "SIDECAR_READY_AFTER_FROM=WARMUP_SECONDS",
				"SIDECAR_QUIT=POST /quit", "SIDECAR_QUIT_FROM=127.0.0.1"},
			what: "the examples' Python sidecar (python3 -u -c SCRIPT, the script ignored): on :8080, /started 200, " +
				"/ready 200 after $WARMUP_SECONDS (default 15) s, / 200, POST /quit from 127.0.0.1 exits 0 (403 from " +
				"elsewhere), SIGTERM exits 0"},
		{prefix: "gcr.io/cloud-sql-connectors/cloud-sql-proxy:2.", ref: "proa-e2e.local/examples/cloud-sql-proxy:2",
			exe: "cloud-sql-proxy", entrypoint: []string{"/cloud-sql-proxy"},
			what: "the Cloud SQL Auth Proxy v2: its flags (--health-check, --http-address, --quitquitquit, " +
				"--exit-zero-on-sigterm, --port, ...) decide its health server, admin server and exit code"},
		{prefix: "cr.fluentbit.io/fluent/fluent-bit:4.", ref: "proa-e2e.local/examples/fluent-bit:4",
			exe: "fluent-bit/bin/fluent-bit", entrypoint: []string{"/fluent-bit/bin/fluent-bit"},
			what: "Fluent Bit with a YAML configuration (-c FILE): its service section decides the health " +
				"endpoint, its tail inputs are printed; no quit endpoint, SIGTERM exits 0"},
	}
}

// standInFor is the stand-in for the image reference ref.
func standInFor(ref string) (standIn, error) {
	name := strings.TrimPrefix(strings.TrimPrefix(ref, "docker.io/library/"), "docker.io/")
	for _, s := range standIns() {
		if strings.HasPrefix(name, s.prefix) {
			return s, nil
		}
	}
	return standIn{}, fmt.Errorf("image %q has no local stand-in: add one to standIns in realnode/examples_test.go", ref)
}

// localImage finds the stand-in for ref and imports it.
func localImage(ctx context.Context, ref string) (string, error) {
	s, err := standInFor(ref)
	if err != nil {
		return "", err
	}
	if s.exe != "" {
		img := node.Plain(s.entrypoint, nd.Testbin(s.exe))
		img.Config.Env = append(img.Config.Env, s.env...)
		if err := nd.AddImage(ctx, s.ref, img); err != nil {
			return "", err
		}
	}
	return s.ref, nil
}

var imageLine = regexp.MustCompile(`(?m)^\s*(?:-\s+)?image:\s*["']?([^"'\s#]+)`)

// Every image of the examples has a stand-in, and every stand-in serves an
// example: the table holds no stale lines. (No node needed: this fails
// fast, before scenario 9's Pods.)
func TestStandInsMatchTheExamples(t *testing.T) {
	t.Parallel()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(root, "examples", "*.yaml"))
	used := map[string]bool{}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range imageLine.FindAllStringSubmatch(string(data), -1) {
			s, err := standInFor(m[1])
			if err != nil {
				t.Errorf("%s: %v", filepath.Base(file), err)
			}
			used[s.prefix] = true
		}
	}
	if len(used) == 0 {
		t.Fatal("no image in examples/*.yaml")
	}
	for _, s := range standIns() {
		if !used[s.prefix] {
			t.Errorf("stand-in %q (%s) serves no example: remove it from standIns", s.prefix, s.ref)
		}
	}
}

// Scenario 9: every Job of examples/*.yaml runs as written, with local
// images substituted, and completes. The objects of each file go into a
// namespace of its own (or the one they name); the test plays the Job
// controller: it creates the Job (no controller runs it), reads its Pod
// template back as the API server stored it, and creates that Pod on the
// node.
func TestExamples(t *testing.T) {
	t.Parallel()
	node.Require(t)
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(root, "examples", "*.yaml"))
	if len(files) == 0 {
		t.Fatal("no examples/*.yaml")
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".yaml"), func(t *testing.T) {
			t.Parallel()
			runExample(t, file)
		})
	}
}

func runExample(t *testing.T, file string) {
	ctx := testCtx(t, 3*time.Minute)
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	defaultNS := "ex-" + podName(t)
	if len(defaultNS) > 60 {
		defaultNS = defaultNS[:60]
	}
	type job struct {
		ns  string
		obj map[string]any
	}
	var jobs []job
	for i, doc := range cluster.SplitYAML(string(data)) {
		apiVersion, kind, ns := cluster.TopLevel(doc)
		where := fmt.Sprintf("%s document %d (%s)", filepath.Base(file), i+1, kind)
		plural, namespaced, err := nd.Cluster.Resource(ctx, apiVersion, kind)
		if err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		switch {
		case !namespaced:
			ns = ""
		case ns == "":
			ns = defaultNS
		}
		if ns != "" {
			if err := nd.Namespace(ctx, ns); err != nil {
				t.Fatal(err)
			}
		}
		var out map[string]any
		if err := nd.Cluster.Send(ctx, cluster.Request{Method: "POST", Path: cluster.CreatePath(apiVersion, plural, ns),
			Body: []byte(doc), ContentType: "application/yaml", Out: &out}); err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		if kind == "Job" {
			jobs = append(jobs, job{ns, out})
		}
	}
	if len(jobs) == 0 {
		t.Skipf("%s holds no Job", filepath.Base(file))
	}
	for _, j := range jobs {
		name := j.obj["metadata"].(map[string]any)["name"].(string)
		tmpl := j.obj["spec"].(map[string]any)["template"].(map[string]any)
		spec := tmpl["spec"].(map[string]any)
		labels := map[string]any{}
		if md, ok := tmpl["metadata"].(map[string]any); ok {
			if l, ok := md["labels"].(map[string]any); ok {
				labels = l
			}
		}
		var containers []string
		for _, key := range []string{"initContainers", "containers"} {
			list, _ := spec[key].([]any)
			for _, c := range list {
				c := c.(map[string]any)
				local, err := localImage(ctx, c["image"].(string))
				if err != nil {
					t.Fatalf("Job %s, container %s: %v", name, c["name"], err)
				}
				c["image"], c["imagePullPolicy"] = local, "Never"
				if key == "containers" {
					containers = append(containers, c["name"].(string))
				}
			}
		}
		pod := cluster.Obj{"apiVersion": "v1", "kind": "Pod", "spec": spec,
			"metadata": cluster.Obj{"generateName": name + "-", "labels": labels}}
		p := createPod(t, ctx, j.ns, pod)
		final := waitFinished(t, ctx, p, "Succeeded")
		for _, c := range containers {
			if code, ok := final.Pod.Terminated(c); ok && code != 0 {
				t.Errorf("Job %s: container %s exited %d", name, c, code)
			}
		}
		var proaC string
		for _, c := range containers {
			if len(proaLines(p, c, "starting")) > 0 {
				proaC = c
			}
		}
		if proaC == "" {
			t.Errorf("Job %s: no container ran proa", name)
			continue
		}
		started, exiting := proaLine(t, p, proaC, "running command"), proaLine(t, p, proaC, "exiting")
		recordTiming(t, "Job %s: created -> command started %s (after the sidecar's start-up delay); proa exit -> phase %s %s",
			name, ms(started.Time.Sub(p.Created)), final.Pod.Status.Phase, ms(final.Seen.Sub(exiting.Time)))
	}
}
