package e2e

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"proa/e2e/cluster"
)

// yamlBlock finds the ```yaml blocks of a Markdown file.
var yamlBlock = regexp.MustCompile("(?ms)^```yaml\n(.*?)^```")

// The complete manifests in the README and docs/ (those with a top-level
// apiVersion and kind; fragments such as a container's command are not)
// pass a server-side dry-run create with strict field validation: what a
// user copies from the documentation is what the API server accepts.
func TestReadmeManifestsAccepted(t *testing.T) {
	t.Parallel()
	files, _ := filepath.Glob("../docs/*.md")
	files = append([]string{"../README.md"}, files...)
	ctx := testCtx(t, 2*time.Minute)
	cl := env.Cluster
	const ns = "readme"
	if err := cl.CreateNamespace(ctx, ns); err != nil && !cluster.IsCode(err, 409) {
		t.Fatal(err)
	}
	checked := map[string]int{}
	for _, file := range files {
		data, err := readFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for bi, m := range yamlBlock.FindAllStringSubmatch(data, -1) {
			for di, doc := range cluster.SplitYAML(m[1]) {
				apiVersion, kind, _ := cluster.TopLevel(doc)
				if apiVersion == "" || kind == "" {
					continue // a fragment
				}
				where := filepath.Base(file) + " yaml block " + itoa(bi+1) + " document " + itoa(di+1) + " (" + kind + ")"
				plural, namespaced, err := cl.Resource(ctx, apiVersion, kind)
				if err != nil {
					t.Errorf("%s: %v", where, err)
					continue
				}
				path := cluster.CreatePath(apiVersion, plural, "")
				if namespaced {
					path = cluster.CreatePath(apiVersion, plural, ns)
				}
				if err := cl.Send(ctx, cluster.Request{Method: "POST", Path: path + "?dryRun=All&fieldValidation=Strict",
					Body: []byte(doc), ContentType: "application/yaml"}); err != nil {
					t.Errorf("%s rejected: %v", where, err)
					continue
				}
				checked[filepath.Base(file)+" "+kind]++
			}
		}
	}
	// The README's setup: a ServiceAccount, a Role, a RoleBinding and a Job.
	for _, want := range []string{"README.md ServiceAccount", "README.md Role", "README.md RoleBinding", "README.md Job"} {
		if checked[want] == 0 {
			t.Errorf("no %s checked: the README's setup manifests were not found", strings.TrimPrefix(want, "README.md "))
		}
	}
	t.Logf("manifests accepted: %v", checked)
}
