package main

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"proa/e2e/harness"
	"proa/e2e/oci"
)

// No Docker engine runs where the tests run, so the Dockerfile cannot be
// built here. This keeps it in step with what is tested: the Makefile's
// build settings and the labels, user and entrypoint of make release's image.
func TestDockerfileMatchesRelease(t *testing.T) {
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	// Instructions, with continuation lines joined and comments dropped.
	var instructions []string
	cur := ""
	for _, line := range strings.Split(read("Dockerfile"), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		cur += strings.TrimSpace(line)
		if strings.HasSuffix(cur, "\\") {
			cur = strings.TrimSuffix(cur, "\\") + " "
			continue
		}
		if cur != "" {
			instructions = append(instructions, cur)
		}
		cur = ""
	}
	find := func(prefix string) []string {
		var found []string
		for _, in := range instructions {
			if strings.HasPrefix(in, prefix) {
				found = append(found, in)
			}
		}
		return found
	}

	froms := find("FROM ")
	if len(froms) != 2 {
		t.Fatalf("FROM instructions %q, want a build stage and scratch", froms)
	}
	if !regexp.MustCompile(`^FROM --platform=\$BUILDPLATFORM golang:[0-9.]+-\w+@sha256:[0-9a-f]{64} AS build$`).MatchString(froms[0]) {
		t.Errorf("build stage %q: want the golang image pinned by digest, on $BUILDPLATFORM", froms[0])
	}
	if froms[1] != "FROM scratch" {
		t.Errorf("final stage %q, want FROM scratch", froms[1])
	}

	// The Makefile's BUILD_ENV and BUILD_FLAGS, in the RUN that builds.
	mk := read("Makefile")
	setting := func(name string) string {
		m := regexp.MustCompile(`(?m)^` + name + ` = (.*)$`).FindStringSubmatch(mk)
		if m == nil {
			t.Fatalf("no %s in the Makefile", name)
		}
		return m[1]
	}
	runs := find("RUN ")
	var build string
	for _, r := range runs {
		if strings.Contains(r, "go build") {
			build = r
		}
	}
	for _, word := range strings.Fields(setting("BUILD_ENV")) {
		if !slices.Contains(strings.Fields(build), word) {
			t.Errorf("the Dockerfile's go build %q lacks the Makefile's %s", build, word)
		}
	}
	flags := strings.NewReplacer("'", `"`, "$(VERSION)", "${VERSION}").Replace(setting("BUILD_FLAGS"))
	if !strings.Contains(build, "go build "+flags+" ") {
		t.Errorf("the Dockerfile's go build %q lacks the Makefile's flags %s", build, flags)
	}
	if !strings.Contains(build, `GOOS="$TARGETOS" GOARCH="$TARGETARCH" GOARM="${TARGETVARIANT#v}"`) {
		t.Errorf("the Dockerfile's go build %q does not cross-compile for TARGETOS/TARGETARCH/TARGETVARIANT", build)
	}

	if got := find("USER "); !slices.Equal(got, []string{"USER 65532:65532"}) {
		t.Errorf("USER %q, want 65532:65532", got)
	}
	if got := find("ENTRYPOINT "); !slices.Equal(got, []string{`ENTRYPOINT ["/proa"]`}) {
		t.Errorf("ENTRYPOINT %q, want [\"/proa\"]", got)
	}
	if got := find("COPY --from=build "); !slices.Equal(got, []string{"COPY --from=build /out/proa /proa"}) {
		t.Errorf("the final stage copies %q, want /proa only", got)
	}

	// The same labels as the release's image, the fixed ones with the same
	// values and the others from build arguments.
	labels := map[string]string{}
	for _, l := range find("LABEL ") {
		for _, m := range regexp.MustCompile(`([a-z.]+)="([^"]*)"`).FindAllStringSubmatch(l, -1) {
			labels[m[1]] = m[2]
		}
	}
	img := oci.ProaImage(oci.Platforms[0], nil, "VERSION", "REVISION", time.Unix(0, 0))
	want := map[string]string{"org.opencontainers.image.source": "${SOURCE_URL}"}
	for k, v := range img.Config.Labels {
		want[k] = v
	}
	want["org.opencontainers.image.version"] = "${VERSION}"
	want["org.opencontainers.image.revision"] = "${REVISION}"
	want["org.opencontainers.image.created"] = "${CREATED}"
	for k, v := range want {
		if labels[k] != v {
			t.Errorf("Dockerfile label %s = %q, want %q", k, labels[k], v)
		}
	}
	if len(labels) != len(want) {
		t.Errorf("Dockerfile labels %v, want %v", labels, want)
	}
}
