package oci

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"slices"
	"testing"
	"time"
)

func TestNormalizeName(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"proa", "docker.io/library/proa:latest"},
		{"proa:1.0", "docker.io/library/proa:1.0"},
		{"team/proa:1.0", "docker.io/team/proa:1.0"},
		{"docker.io/proa:1.0", "docker.io/library/proa:1.0"},
		{"docker.io/library/proa:1.0", "docker.io/library/proa:1.0"},
		{"localhost/proa", "localhost/proa:latest"},
		{"localhost:5000/proa", "localhost:5000/proa:latest"},
		{"registry.example.com/a/b:v2", "registry.example.com/a/b:v2"},
		{"registry.example.com:443/proa:v2", "registry.example.com:443/proa:v2"},
		{"proa@sha256:0123", "docker.io/library/proa@sha256:0123"},
	} {
		if got := normalizeName(c.in); got != c.want {
			t.Errorf("normalizeName(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// readArchive returns the archive's regular files by name, in tar order.
func readArchive(t *testing.T, data []byte) (map[string][]byte, []string) {
	t.Helper()
	files := map[string][]byte{}
	var order []string
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files, order
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = b
		order = append(order, h.Name)
	}
}

func TestWriteMultiArch(t *testing.T) {
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var images []Image
	for _, p := range Platforms {
		images = append(images, ProaImage(p, []byte("binary for "+p.Architecture+p.Variant), "1.2.3", "abc", created))
	}
	var a, b bytes.Buffer
	if err := Write(&a, "proa:1.2.3", created, images...); err != nil {
		t.Fatal(err)
	}
	if err := Write(&b, "proa:1.2.3", created, images...); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("two writes of the same images differ")
	}
	files, order := readArchive(t, a.Bytes())
	if !slices.Equal(order[:3], []string{"oci-layout", "index.json", "manifest.json"}) {
		t.Errorf("archive starts with %v, want oci-layout, index.json, manifest.json", order[:3])
	}

	var index struct {
		Manifests []Descriptor
	}
	if err := json.Unmarshal(files["index.json"], &index); err != nil {
		t.Fatal(err)
	}
	if len(index.Manifests) != 1 || index.Manifests[0].MediaType != MediaTypeIndex {
		t.Fatalf("index.json: %s", files["index.json"])
	}
	if got := index.Manifests[0].Annotations["io.containerd.image.name"]; got != "docker.io/library/proa:1.2.3" {
		t.Errorf("io.containerd.image.name = %q", got)
	}
	if got := index.Manifests[0].Annotations["org.opencontainers.image.ref.name"]; got != "1.2.3" {
		t.Errorf("org.opencontainers.image.ref.name = %q", got)
	}

	// manifest.json (docker's classic store): every platform, config and
	// layer paths that exist in the archive, the first image last.
	var docker []dockerManifest
	if err := json.Unmarshal(files["manifest.json"], &docker); err != nil {
		t.Fatal(err)
	}
	if len(docker) != len(Platforms) {
		t.Fatalf("manifest.json has %d entries, want %d", len(docker), len(Platforms))
	}
	var arches []string
	for _, m := range docker {
		var cfg struct{ Architecture, Variant string }
		if err := json.Unmarshal(files[m.Config], &cfg); err != nil {
			t.Fatalf("manifest.json config %q: %v", m.Config, err)
		}
		arches = append(arches, cfg.Architecture+cfg.Variant)
		if len(m.Layers) != 1 || files[m.Layers[0]] == nil {
			t.Errorf("manifest.json layers %v: not in the archive", m.Layers)
		}
		if !slices.Equal(m.RepoTags, []string{"docker.io/library/proa:1.2.3"}) {
			t.Errorf("RepoTags = %v", m.RepoTags)
		}
	}
	want := []string{"arm64", "armv7", "ppc64le", "s390x", "riscv64", "amd64"}
	if !slices.Equal(arches, want) {
		t.Errorf("manifest.json platforms %v, want %v", arches, want)
	}
	for name, data := range files {
		if name == "manifest.json" || name == "index.json" || name == "oci-layout" {
			continue
		}
		if bytes.Contains(data, []byte(`"variant":""`)) {
			t.Errorf("%s has an empty variant: %s", name, data)
		}
	}
}
