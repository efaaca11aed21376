package main

// The release read back. TestMain runs `make release` into a temporary
// directory (the Makefile is the one definition of how proa is built), then
// the tests check the artefacts with independent readers: sha256sum, skopeo
// (the OCI index and every platform's image, and Docker's manifest.json
// through its docker-archive transport, which reads what `docker load`
// reads), and containerd's ctr (import, then run the image under runc). A
// second build from a copy of the source in another directory must be
// byte-for-byte the same.
// skopeo and containerd come from Debian's packages; as root they are
// installed when missing. Without root the tests that need them skip,
// unless CI=true, where they fail.

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"proa/e2e/harness"
	"proa/e2e/oci"
)

// What the test release says about itself.
const (
	testVersion  = "9.8.7-test.1"
	testRevision = "0123456789abcdef0123456789abcdef01234567"
	testEpoch    = 1767323045 // 2026-01-02T03:04:05Z
	testCreated  = "2026-01-02T03:04:05Z"
	testSource   = "https://example.com/proa.git"
	testImage    = "proa-release-test"
	testRef      = "docker.io/library/" + testImage + ":" + testVersion
)

var (
	dist  string // the release under test
	dist2 string // the same release, built again from a copy of the source elsewhere
)

func TestMain(m *testing.M) {
	flag.Parse()
	code, err := buildRelease(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "release test:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func buildRelease(m *testing.M) (int, error) {
	if testing.Short() {
		return m.Run(), nil
	}
	root, err := harness.RepoRoot()
	if err != nil {
		return 0, err
	}
	tmp, err := os.MkdirTemp("", "proa-release-test-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(tmp)
	dist = filepath.Join(tmp, "dist")
	if err := makeRelease(root, dist); err != nil {
		return 0, err
	}
	// The second build: the source's files in another directory, its output
	// in another. (make release-check goes further: two clones, one with an
	// empty build cache. Here the compiler's work comes from the cache, so
	// this checks the link, the packing, and that no path leaks in.)
	copyRoot := filepath.Join(tmp, "another", "copy", "of", "proa")
	if err := copySource(root, copyRoot); err != nil {
		return 0, err
	}
	dist2 = filepath.Join(tmp, "dist2")
	if err := makeRelease(copyRoot, dist2); err != nil {
		return 0, err
	}
	return m.Run(), nil
}

func makeRelease(root, out string) error {
	start := time.Now()
	cmd := exec.Command("make", "-s", "-C", root, "release", "DIST="+out,
		"VERSION="+testVersion, "REVISION="+testRevision,
		"SOURCE_DATE_EPOCH="+strconv.Itoa(testEpoch), "SOURCE_URL="+testSource, "IMAGE="+testImage)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out)
	}
	fmt.Fprintf(os.Stderr, "make release in %s: %.1fs\n", root, time.Since(start).Seconds())
	return nil
}

// copySource copies the files git knows of (tracked, or new and not
// ignored: the working tree as it is, uncommitted changes included) from
// root to dst.
func copySource(root, dst string) error {
	cmd := exec.Command("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("git ls-files in %s: %v", root, err)
	}
	for _, name := range strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00") {
		src := filepath.Join(root, name)
		fi, err := os.Lstat(src)
		if os.IsNotExist(err) {
			continue // deleted in the working tree
		}
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		data, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dst, name)), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, name), data, fi.Mode().Perm()); err != nil {
			return err
		}
	}
	return nil
}

func needRelease(t *testing.T) {
	if dist == "" {
		t.Skip("-short: no release built")
	}
}

// need returns the path of a command, installing Debian package pkg as root
// when it is missing.
func need(t *testing.T, command, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(command); err == nil {
		return p
	}
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is missing and this is not root, so Debian's %s cannot be installed", command, pkg)
		}
		t.Skipf("%s is missing (Debian package %s; the test installs it when run as root)", command, pkg)
	}
	apt := func(args ...string) error {
		cmd := exec.Command("apt-get", append([]string{"-q", "-y", "-o", "DPkg::Lock::Timeout=300"}, args...)...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("apt-get %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := apt("install", "--no-install-recommends", pkg); err != nil {
		if err := apt("update"); err != nil {
			t.Fatal(err)
		}
		if err := apt("install", "--no-install-recommends", pkg); err != nil {
			t.Fatal(err)
		}
	}
	p, err := exec.LookPath(command)
	if err != nil {
		t.Fatalf("installed Debian's %s, still no %s: %v", pkg, command, err)
	}
	return p
}

func run(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return out
}

func readDist(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dist, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func platformString(p oci.Platform) string {
	return strings.TrimSuffix(p.OS+"/"+p.Architecture+"/"+p.Variant, "/")
}

// The artefacts are exactly the six binaries, the archive and SHA256SUMS,
// and SHA256SUMS holds the sum of every other one, in sha256sum's format.
func TestArtefactsAndSums(t *testing.T) {
	needRelease(t)
	var want []string
	for _, p := range oci.Platforms {
		want = append(want, binaryName(p))
	}
	want = append(want, archiveName)
	entries, err := os.ReadDir(dist)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	all := append(slices.Clone(want), sumsName)
	slices.Sort(all)
	if !slices.Equal(got, all) {
		t.Errorf("dist holds %v, want %v", got, all)
	}
	sums := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(readDist(t, sumsName)))
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			t.Fatalf("SHA256SUMS line %q: want HEX, two spaces, NAME", sc.Text())
		}
		sums[name] = sum
	}
	for _, name := range want {
		s := sha256.Sum256(readDist(t, name))
		if sums[name] != hex.EncodeToString(s[:]) {
			t.Errorf("SHA256SUMS: %s is %q, want %x", name, sums[name], s)
		}
	}
	if len(sums) != len(want) {
		t.Errorf("SHA256SUMS lists %d files, want %d", len(sums), len(want))
	}
	cmd := exec.Command("sha256sum", "--strict", "-c", sumsName)
	cmd.Dir = dist
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("sha256sum -c: %v\n%s", err, out)
	}
}

// Two builds, from two directories, are byte-for-byte identical.
func TestReproducible(t *testing.T) {
	needRelease(t)
	a, err := os.ReadDir(dist)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadDir(dist2)
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != len(b) {
		t.Fatalf("%d artefacts, then %d", len(a), len(b))
	}
	for i := range a {
		if a[i].Name() != b[i].Name() {
			t.Fatalf("artefact %d: %s, then %s", i, a[i].Name(), b[i].Name())
		}
		x := readDist(t, a[i].Name())
		y, err := os.ReadFile(filepath.Join(dist2, b[i].Name()))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(x, y) {
			t.Errorf("%s differs between the two builds (%d and %d bytes)", a[i].Name(), len(x), len(y))
		}
	}
}

func TestBinaryVersion(t *testing.T) {
	needRelease(t)
	if runtime.GOOS != "linux" {
		t.Skip("the binaries are for Linux")
	}
	for _, p := range oci.Platforms {
		if p.Architecture != runtime.GOARCH {
			continue
		}
		out := run(t, filepath.Join(dist, binaryName(p)), "--version")
		if string(out) != "proa "+testVersion+"\n" {
			t.Errorf("%s --version printed %q, want %q", binaryName(p), out, "proa "+testVersion+"\n")
		}
		return
	}
	t.Skipf("no release binary for %s", runtime.GOARCH)
}

type imageConfig struct {
	Created      string
	Architecture string
	OS           string
	Variant      string
	Config       struct {
		User       string
		Entrypoint []string
		Cmd        []string
		Env        []string
		Labels     map[string]string
	}
}

// checkConfig checks one platform's image configuration.
func checkConfig(t *testing.T, p oci.Platform, c imageConfig) {
	t.Helper()
	if c.OS != p.OS || c.Architecture != p.Architecture || c.Variant != p.Variant {
		t.Errorf("%s: config is for %s/%s/%s", platformString(p), c.OS, c.Architecture, c.Variant)
	}
	if c.Created != testCreated {
		t.Errorf("%s: created %q, want %q", platformString(p), c.Created, testCreated)
	}
	if c.Config.User != "65532:65532" {
		t.Errorf("%s: user %q, want 65532:65532", platformString(p), c.Config.User)
	}
	if !slices.Equal(c.Config.Entrypoint, []string{"/proa"}) || c.Config.Cmd != nil || c.Config.Env != nil {
		t.Errorf("%s: entrypoint %q, cmd %q, env %q; want [/proa], none, none", platformString(p), c.Config.Entrypoint, c.Config.Cmd, c.Config.Env)
	}
	want := map[string]string{
		"org.opencontainers.image.title":       "proa",
		"org.opencontainers.image.description": "Entrypoint for a Pod's main container: waits for sidecars, runs the command, stops the sidecars",
		"org.opencontainers.image.version":     testVersion,
		"org.opencontainers.image.revision":    testRevision,
		"org.opencontainers.image.created":     testCreated,
		"org.opencontainers.image.source":      testSource,
		"org.opencontainers.image.licenses":    "Apache-2.0",
	}
	for k, v := range want {
		if c.Config.Labels[k] != v {
			t.Errorf("%s: label %s = %q, want %q", platformString(p), k, c.Config.Labels[k], v)
		}
	}
	if len(c.Config.Labels) != len(want) {
		t.Errorf("%s: labels %v, want exactly %v", platformString(p), c.Config.Labels, want)
	}
}

// checkLayer checks that a layer (gzip or plain tar) holds exactly /proa:
// a regular file owned by root, mode 0755, the release binary.
func checkLayer(t *testing.T, p oci.Platform, layer []byte) {
	t.Helper()
	var r io.Reader = bytes.NewReader(layer)
	if bytes.HasPrefix(layer, []byte{0x1f, 0x8b}) {
		zr, err := gzip.NewReader(r)
		if err != nil {
			t.Fatal(err)
		}
		r = zr
	}
	tr := tar.NewReader(r)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s: layer: %v", platformString(p), err)
		}
		names = append(names, h.Name)
		if h.Name != "proa" {
			continue
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg || h.Mode != 0o755 || h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s: /proa is type %c mode %o owner %d:%d, want a regular file, 0755, 0:0", platformString(p), h.Typeflag, h.Mode, h.Uid, h.Gid)
		}
		if !bytes.Equal(data, readDist(t, binaryName(p))) {
			t.Errorf("%s: /proa in the image is not %s", platformString(p), binaryName(p))
		}
	}
	if !slices.Equal(names, []string{"proa"}) {
		t.Errorf("%s: layer holds %q, want exactly [proa]", platformString(p), names)
	}
}

// readDir reads a skopeo dir: copy: its manifest, config and only layer.
func readDir(t *testing.T, dir string) (imageConfig, []byte) {
	t.Helper()
	var m struct {
		Config struct{ Digest string }
		Layers []struct{ Digest string }
	}
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &m); err != nil || len(m.Layers) != 1 {
		t.Fatalf("%s/manifest.json: %v, %d layers, want 1: %s", dir, err, len(m.Layers), b)
	}
	blob := func(d string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, strings.TrimPrefix(d, "sha256:")))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	var c imageConfig
	if err := json.Unmarshal(blob(m.Config.Digest), &c); err != nil {
		t.Fatal(err)
	}
	return c, blob(m.Layers[0].Digest)
}

// skopeo reads the OCI archive: the index lists the six platforms in order,
// and each platform's image has the right config and the right /proa.
func TestSkopeoOCIArchive(t *testing.T) {
	needRelease(t)
	skopeo := need(t, "skopeo", "skopeo")
	archive := "oci-archive:" + filepath.Join(dist, archiveName)
	var index struct {
		MediaType string
		Manifests []struct {
			MediaType string
			Platform  oci.Platform
		}
	}
	raw := run(t, skopeo, "inspect", "--raw", archive)
	if err := json.Unmarshal(raw, &index); err != nil {
		t.Fatalf("skopeo inspect --raw: %v\n%s", err, raw)
	}
	if index.MediaType != oci.MediaTypeIndex {
		t.Errorf("top-level manifest is %q, want an OCI image index", index.MediaType)
	}
	var got, want []string
	for _, m := range index.Manifests {
		got = append(got, platformString(m.Platform))
		if m.MediaType != oci.MediaTypeManifest {
			t.Errorf("%s: media type %q", platformString(m.Platform), m.MediaType)
		}
	}
	for _, p := range oci.Platforms {
		want = append(want, platformString(p))
	}
	if !slices.Equal(got, want) {
		t.Errorf("the index lists %v, want %v", got, want)
	}

	tmp := t.TempDir()
	for _, p := range oci.Platforms {
		args := []string{"copy", "-q", "--override-os", p.OS, "--override-arch", p.Architecture}
		if p.Variant != "" {
			args = append(args, "--override-variant", p.Variant)
		}
		dir := filepath.Join(tmp, binaryName(p))
		run(t, skopeo, append(args, archive, "dir:"+dir)...)
		config, layer := readDir(t, dir)
		checkConfig(t, p, config)
		checkLayer(t, p, layer)
	}
}

// Docker's manifest.json, read by skopeo's docker-archive transport as
// docker load (classic image store) reads it: one entry per platform, the
// first platform (amd64) last, each named IMAGE:VERSION.
func TestSkopeoDockerArchive(t *testing.T) {
	needRelease(t)
	skopeo := need(t, "skopeo", "skopeo")
	archive := "docker-archive:" + filepath.Join(dist, archiveName)
	order := append(slices.Clone(oci.Platforms[1:]), oci.Platforms[0])
	tmp := t.TempDir()
	for i, p := range order {
		src := archive + ":@" + strconv.Itoa(i)
		var c imageConfig
		out := run(t, skopeo, "inspect", "--config", src)
		if err := json.Unmarshal(out, &c); err != nil {
			t.Fatalf("skopeo inspect --config %s: %v\n%s", src, err, out)
		}
		checkConfig(t, p, c)
	}
	// By name, as docker load tags it.
	var info struct{ Name string }
	out := run(t, skopeo, "inspect", archive+":"+testImage+":"+testVersion)
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatal(err)
	}
	if info.Name != "docker.io/library/"+testImage {
		t.Errorf("docker-archive by name %s:%s: %q", testImage, testVersion, info.Name)
	}
	dir := filepath.Join(tmp, "amd64")
	run(t, skopeo, "copy", "-q", archive+":@"+strconv.Itoa(len(order)-1), "dir:"+dir)
	_, layer := readDir(t, dir)
	checkLayer(t, oci.Platforms[0], layer)
}
