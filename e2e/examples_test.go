package e2e

import (
	"encoding/json"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"proa/e2e/cluster"
)

// Scenario 12: every document of examples/*.yaml is accepted by the API
// server: a server-side dry-run create (dryRun=All) with strict field
// validation, one request per document, YAML sent as is. The examples must
// include a Job, a ServiceAccount, a Role granting watch on pods, a
// RoleBinding, and a native sidecar.
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
	roleWatch, native := false, false
	start := time.Now()
	docs := 0
	for _, file := range files {
		data, err := readFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range splitYAML(data) {
			apiVersion, kind, ns := topLevel(doc)
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
			if kind == "Role" && grantsPodWatch(out) {
				roleWatch = true
			}
			if nativeSidecar(out) {
				native = true
			}
		}
	}
	for _, k := range []string{"Job", "ServiceAccount", "Role", "RoleBinding"} {
		if kinds[k] == 0 {
			t.Errorf("no %s in the examples", k)
		}
	}
	if !roleWatch {
		t.Errorf("no Role in the examples grants watch on pods")
	}
	if !native {
		t.Errorf("no example has a native sidecar (an initContainer with restartPolicy: Always)")
	}
	recordTiming(t, "%d documents in %d files accepted (%v) in %s", docs, len(files), kinds, ms(time.Since(start)))
}

// splitYAML splits a multi-document YAML stream on "---" lines and drops
// documents holding only comments and blank lines.
func splitYAML(data string) []string {
	var docs []string
	var cur []string
	flush := func() {
		for _, l := range cur {
			if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "#") {
				docs = append(docs, strings.Join(cur, "\n")+"\n")
				break
			}
		}
		cur = nil
	}
	for _, line := range strings.Split(data, "\n") {
		if strings.TrimRight(line, " \t\r") == "---" || strings.HasPrefix(line, "--- ") {
			flush()
			continue
		}
		cur = append(cur, line)
	}
	flush()
	return docs
}

var (
	topKey = regexp.MustCompile(`^([A-Za-z]+):\s*(.*?)\s*$`)
	nsKey  = regexp.MustCompile(`^\s+namespace:\s*["']?([^"'\s#]+)`)
)

// topLevel reads apiVersion, kind and metadata.namespace from a document
// without a YAML library: enough for plain manifests.
func topLevel(doc string) (apiVersion, kind, ns string) {
	inMeta := false
	for _, line := range strings.Split(doc, "\n") {
		if m := topKey.FindStringSubmatch(line); m != nil {
			inMeta = m[1] == "metadata"
			v := strings.Trim(m[2], `"'`)
			switch m[1] {
			case "apiVersion":
				apiVersion = v
			case "kind":
				kind = v
			}
			continue
		}
		if m := nsKey.FindStringSubmatch(line); inMeta && m != nil && ns == "" && indent(line) == 2 {
			ns = m[1]
		}
	}
	return apiVersion, kind, ns
}

func indent(s string) int { return len(s) - len(strings.TrimLeft(s, " ")) }

func grantsPodWatch(role map[string]any) bool {
	var r struct {
		Rules []struct{ APIGroups, Resources, Verbs []string }
	}
	b, _ := json.Marshal(role)
	json.Unmarshal(b, &r)
	for _, rule := range r.Rules {
		if slices.Contains(rule.APIGroups, "") && slices.Contains(rule.Resources, "pods") &&
			(slices.Contains(rule.Verbs, "watch") || slices.Contains(rule.Verbs, "*")) {
			return true
		}
	}
	return false
}

// nativeSidecar reports whether a Job, Pod or workload object has an init
// container with restartPolicy Always.
func nativeSidecar(obj map[string]any) bool {
	b, _ := json.Marshal(obj)
	var o struct {
		Spec struct {
			InitContainers []struct{ RestartPolicy string }
			Template       struct {
				Spec struct {
					InitContainers []struct{ RestartPolicy string }
				}
			}
		}
	}
	json.Unmarshal(b, &o)
	for _, c := range append(o.Spec.InitContainers, o.Spec.Template.Spec.InitContainers...) {
		if c.RestartPolicy == "Always" {
			return true
		}
	}
	return false
}
