package e2e

import (
	"context"
	"encoding/json"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"proa/e2e/cluster"
)

// Scenario 12: every document of examples/*.yaml is accepted by the API
// server: a server-side dry-run create (dryRun=All) with strict field
// validation, one request per document, YAML sent as is. The examples must
// include a Job, a ServiceAccount, a Role granting get and watch on pods and
// nothing else, a RoleBinding, and the variants the SPEC lists: a native
// sidecar with a startupProbe, an --install initContainer, and kill mode in a
// shared process namespace. Every container that runs proa names itself
// (PROA_CONTAINER_NAME) and gets POD_NAME from the downward API. And every
// Job's Pod passes the "restricted" Pod Security Standard: its Pod template,
// dry-run created as a Pod in a namespace that enforces it (after checking
// that the namespace rejects a Pod that does not comply).
func TestExamplesAccepted(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("../examples/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no ../examples/*.yaml: the repository must ship example manifests")
	}
	ctx := testCtx(t, 2*time.Minute)
	cl := env.Cluster
	const defaultNS = "examples"
	if err := cl.CreateNamespace(ctx, defaultNS); err != nil && !cluster.IsCode(err, 409) {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	var jobs []exampleJob
	start := time.Now()
	docs := 0
	for _, file := range files {
		data, err := readFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range cluster.SplitYAML(data) {
			apiVersion, kind, ns := cluster.TopLevel(doc)
			where := filepath.Base(file) + " document " + itoa(i+1) + " (" + kind + ")"
			if apiVersion == "" || kind == "" {
				t.Errorf("%s: no top-level apiVersion or kind", where)
				continue
			}
			plural, namespaced, err := cl.Resource(ctx, apiVersion, kind)
			if err != nil {
				t.Errorf("%s: %v", where, err)
				continue
			}
			if !namespaced {
				ns = ""
			} else if ns == "" {
				ns = defaultNS
			} else if err := cl.CreateNamespace(ctx, ns); err != nil && !cluster.IsCode(err, 409) {
				t.Fatal(err)
			}
			var out map[string]any
			err = cl.Send(ctx, cluster.Request{Method: "POST",
				Path: cluster.CreatePath(apiVersion, plural, ns) + "?dryRun=All&fieldValidation=Strict",
				Body: []byte(doc), ContentType: "application/yaml", Out: &out})
			if err != nil {
				t.Errorf("%s rejected: %v", where, err)
				continue
			}
			docs++
			kinds[kind]++
			if kind == "Role" {
				if verbs := podVerbs(out); !slices.Equal(verbs, []string{"get", "watch"}) {
					t.Errorf("%s grants %v on pods, want exactly get and watch (proa never lists)", where, verbs)
				}
			}
			if kind == "Job" {
				j, err := decodeJob(out)
				if err != nil {
					t.Fatalf("%s: %v", where, err)
				}
				j.where = where
				jobs = append(jobs, j)
			}
		}
	}
	for _, k := range []string{"Job", "ServiceAccount", "Role", "RoleBinding"} {
		if kinds[k] == 0 {
			t.Errorf("no %s in the examples", k)
		}
	}
	checkVariants(t, jobs)
	checkRestricted(t, ctx, jobs)
	recordTiming(t, "%d documents in %d files accepted (%v), %d Pod templates restricted, in %s", docs, len(files), kinds, len(jobs), ms(time.Since(start)))
}

// exampleJob is what the checks read from a Job the API server returned.
type exampleJob struct {
	where string
	name  string
	spec  map[string]any // spec.template.spec, as returned
	pod   podSpec
}

type podSpec struct {
	ShareProcessNamespace bool
	InitContainers        []exampleContainer
	Containers            []exampleContainer
}

type exampleContainer struct {
	Name          string
	Image         string
	Command, Args []string
	RestartPolicy string
	StartupProbe  *struct{}
	Env           []struct {
		Name      string
		Value     string
		ValueFrom *struct {
			FieldRef *struct{ FieldPath string }
		}
	}
}

func decodeJob(obj map[string]any) (exampleJob, error) {
	var j struct {
		Metadata struct{ Name string }
		Spec     struct {
			Template struct {
				Spec json.RawMessage
			}
		}
	}
	b, err := json.Marshal(obj)
	if err != nil {
		return exampleJob{}, err
	}
	if err := json.Unmarshal(b, &j); err != nil {
		return exampleJob{}, err
	}
	out := exampleJob{name: j.Metadata.Name}
	if err := json.Unmarshal(j.Spec.Template.Spec, &out.spec); err != nil {
		return out, err
	}
	return out, json.Unmarshal(j.Spec.Template.Spec, &out.pod)
}

// proaArgs returns the arguments of proa when the container runs it as its
// entrypoint (the image's /proa, or an installed copy), else nil.
func (c exampleContainer) proaArgs() []string {
	argv := append(slices.Clone(c.Command), c.Args...)
	if len(argv) == 0 || path.Base(argv[0]) != "proa" {
		return nil
	}
	return append([]string{}, argv[1:]...)
}

func (c exampleContainer) env(name string) (value, fieldPath string, ok bool) {
	for _, e := range c.Env {
		if e.Name == name {
			if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
				fieldPath = e.ValueFrom.FieldRef.FieldPath
			}
			return e.Value, fieldPath, true
		}
	}
	return "", "", false
}

// checkVariants checks the examples as a set: each container that runs proa
// names itself and its Pod, and the variants the SPEC lists are there.
func checkVariants(t *testing.T, jobs []exampleJob) {
	t.Helper()
	var native, install, kill bool
	for _, j := range jobs {
		for _, c := range j.pod.InitContainers {
			if c.RestartPolicy == "Always" && c.StartupProbe != nil {
				native = true
			}
			if args := c.proaArgs(); slices.Contains(args, "--install") {
				install = true
			}
		}
		for _, c := range j.pod.Containers {
			args := c.proaArgs()
			if args == nil {
				continue
			}
			if v, _, _ := c.env("PROA_CONTAINER_NAME"); v != c.Name {
				t.Errorf("%s: container %s runs proa with PROA_CONTAINER_NAME %q, want %q (injectors put their proxy first)", j.where, c.Name, v, c.Name)
			}
			if _, f, _ := c.env("POD_NAME"); f != "metadata.name" {
				t.Errorf("%s: container %s runs proa without POD_NAME from the downward API (metadata.name)", j.where, c.Name)
			}
			if j.pod.ShareProcessNamespace && slices.ContainsFunc(args, func(a string) bool {
				return a == "-k" || a == "--kill" || a == "-K" || a == "--kill-all" || strings.HasPrefix(a, "--kill=")
			}) {
				kill = true
			}
		}
	}
	if !native {
		t.Error("no example has a native sidecar (an initContainer with restartPolicy: Always) with a startupProbe")
	}
	if !install {
		t.Error("no example installs proa with an initContainer running proa --install")
	}
	if !kill {
		t.Error("no example uses kill mode (-k/-K) with shareProcessNamespace: true")
	}
}

// checkRestricted dry-run creates each Job's Pod template as a Pod in a
// namespace that enforces the "restricted" Pod Security Standard (PodSecurity
// admission enforces it on Pods, not on Jobs). A Pod that does not comply
// must be refused there first, or the check proves nothing.
func checkRestricted(t *testing.T, ctx context.Context, jobs []exampleJob) {
	t.Helper()
	cl := env.Cluster
	const ns = "examples-restricted"
	err := cl.Do(ctx, "POST", "/api/v1/namespaces", cluster.Obj{"apiVersion": "v1", "kind": "Namespace",
		"metadata": cluster.Obj{"name": ns, "labels": cluster.Obj{
			"pod-security.kubernetes.io/enforce":         "restricted",
			"pod-security.kubernetes.io/enforce-version": "latest",
		}}}, nil)
	if err != nil && !cluster.IsCode(err, 409) {
		t.Fatal(err)
	}
	create := func(name string, spec map[string]any) error {
		return cl.Send(ctx, cluster.Request{Method: "POST",
			Path: "/api/v1/namespaces/" + ns + "/pods?dryRun=All&fieldValidation=Strict",
			Body: cluster.Obj{"apiVersion": "v1", "kind": "Pod", "metadata": cluster.Obj{"name": name}, "spec": spec}})
	}
	// The control: runs as root by default, may escalate, keeps capabilities.
	err = create("not-restricted", cluster.Obj{"containers": []cluster.Obj{{"name": "c", "image": "busybox:1.37"}}})
	if !cluster.IsCode(err, 403) || !strings.Contains(err.Error(), "violates PodSecurity") {
		t.Fatalf("a Pod with no securityContext in namespace %s: %v, want 403 violates PodSecurity \"restricted\"", ns, err)
	}
	for _, j := range jobs {
		if err := create(j.name, j.spec); err != nil {
			t.Errorf("%s: its Pod fails the restricted Pod Security Standard: %v", j.where, err)
		}
	}
}

// podVerbs returns the verbs a Role grants on pods in the core group, sorted.
func podVerbs(role map[string]any) []string {
	var r struct {
		Rules []struct{ APIGroups, Resources, Verbs []string }
	}
	b, _ := json.Marshal(role)
	json.Unmarshal(b, &r)
	var verbs []string
	for _, rule := range r.Rules {
		if slices.Contains(rule.APIGroups, "") && (slices.Contains(rule.Resources, "pods") || slices.Contains(rule.Resources, "*")) {
			verbs = append(verbs, rule.Verbs...)
		}
	}
	slices.Sort(verbs)
	return slices.Compact(verbs)
}
