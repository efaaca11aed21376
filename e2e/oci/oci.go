// Package oci writes OCI image layout archives (the format of `docker save`
// since Docker 25, `skopeo copy oci-archive:`, and `ctr images import`) with
// the standard library only: a tar holding oci-layout, index.json and the
// blobs, plus Docker's manifest.json. Output is byte-for-byte reproducible:
// the same input gives the same archive, whatever the directory, clock or
// machine.
//
// Each image is a single layer. Several images with different platforms form
// a multi-arch image: the top-level index.json points to one image index,
// which lists one manifest per platform.
//
// Who reads what: containerd (`ctr images import`, and Docker with the
// containerd image store) and skopeo read oci-layout and index.json and
// ignore manifest.json. Docker's classic image store reads only
// manifest.json (moby's image/tarexport: no manifest.json, no load), which
// lists every platform's config and layer by path, each with the image's
// name in RepoTags. That store keeps one image per tag: `docker load
// --platform linux/arm64` loads only that one; without --platform it loads
// them all and the tag ends on the last entry, which is the first image
// given to Write (manifest.json lists it last).
package oci

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
	"time"
)

// Media types of the OCI image specification.
const (
	MediaTypeIndex    = "application/vnd.oci.image.index.v1+json"
	MediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	MediaTypeLayer    = "application/vnd.oci.image.layer.v1.tar+gzip"
)

// File is one file of an image's single layer. Parent directories are added
// (mode 0755, owned by root) when the files do not list them.
type File struct {
	Path     string // inside the image, e.g. "proa" or "bin/sh"; no leading slash needed
	Mode     int64  // permission bits, e.g. 0o755
	Data     []byte
	Dir      bool   // a directory: Data is ignored
	Symlink  string // when set, a symbolic link to this target: Data is ignored
	UID, GID int
}

// Config is the runtime configuration of an image.
type Config struct {
	Entrypoint []string          `json:"Entrypoint,omitempty"`
	Cmd        []string          `json:"Cmd,omitempty"`
	Env        []string          `json:"Env,omitempty"`
	User       string            `json:"User,omitempty"`
	WorkingDir string            `json:"WorkingDir,omitempty"`
	Labels     map[string]string `json:"Labels,omitempty"`
}

// Image is one platform's image.
type Image struct {
	OS      string // "linux"
	Arch    string // GOARCH: amd64, arm64, arm, ppc64le, s390x, riscv64
	Variant string // "v7" for arm, else ""
	Files   []File
	Config  Config
}

// Descriptor is an OCI content descriptor.
type Descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Platform    *Platform         `json:"platform,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Platform names an image's OS and architecture.
type Platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Variant      string `json:"variant,omitempty"`
}

type blob struct {
	digest string
	data   []byte
}

// Layout is an OCI layout being assembled.
type layout struct {
	blobs   []blob
	created string
}

func (l *layout) add(mediaType string, data []byte) Descriptor {
	sum := sha256.Sum256(data)
	d := "sha256:" + hex.EncodeToString(sum[:])
	if !slices.ContainsFunc(l.blobs, func(b blob) bool { return b.digest == d }) {
		l.blobs = append(l.blobs, blob{d, data})
	}
	return Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(data))}
}

func (l *layout) addJSON(mediaType string, v any) (Descriptor, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return Descriptor{}, err
	}
	return l.add(mediaType, b), nil
}

// Write writes an OCI layout archive of the images to w. name is the image
// reference (e.g. "example.org/proa:1.0"), normalized as Docker and
// containerd do ("proa" becomes "docker.io/library/proa:latest"), so that a
// Pod's image "proa:1.0" finds an archive named "proa:1.0" after `ctr -n
// k8s.io images import`. It is recorded in index.json as both
// io.containerd.image.name (ctr, docker) and
// org.opencontainers.image.ref.name (skopeo, with the tag only), and in
// manifest.json's RepoTags (docker's classic store). created is the creation
// time recorded in every config (use a fixed time, such as the source
// revision's commit time, for reproducible output).
//
// With one image the index points to its manifest; with several it points
// to an image index listing them.
func Write(w io.Writer, name string, created time.Time, images ...Image) error {
	if len(images) == 0 {
		return fmt.Errorf("oci: no image to write")
	}
	name = normalizeName(name)
	l := &layout{created: created.UTC().Format(time.RFC3339)}
	var manifests []Descriptor
	var docker []dockerManifest
	for _, img := range images {
		d, config, layer, err := l.addImage(img)
		if err != nil {
			return err
		}
		manifests = append(manifests, d)
		docker = append(docker, dockerManifest{
			Config:   blobPath(config.Digest),
			RepoTags: []string{name},
			Layers:   []string{blobPath(layer.Digest)},
		})
	}
	// The first image last: see the package comment.
	docker = append(docker[1:], docker[0])
	dockerJSON, err := json.Marshal(docker)
	if err != nil {
		return err
	}
	top := manifests[0]
	if len(images) > 1 {
		var err error
		top, err = l.addJSON(MediaTypeIndex, map[string]any{
			"schemaVersion": 2,
			"mediaType":     MediaTypeIndex,
			"manifests":     manifests,
		})
		if err != nil {
			return err
		}
		top.Platform = nil
	}
	top.Annotations = map[string]string{
		"io.containerd.image.name":          name,
		"org.opencontainers.image.ref.name": refName(name),
	}
	index, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     MediaTypeIndex,
		"manifests":     []Descriptor{top},
	})
	if err != nil {
		return err
	}
	return l.writeTar(w, index, dockerJSON)
}

// dockerManifest is one entry of Docker's manifest.json.
type dockerManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}

func blobPath(digest string) string {
	return "blobs/sha256/" + strings.TrimPrefix(digest, "sha256:")
}

// refName is the tag part of name, as OCI layouts name images.
func refName(name string) string {
	slash := strings.LastIndexByte(name, '/')
	if i := strings.LastIndexByte(name, ':'); i > slash {
		return name[i+1:]
	}
	return "latest"
}

// normalizeName spells an image reference as Docker and containerd store it:
// with a registry host (docker.io when the first component is not a host),
// library/ for a one-component Docker Hub name, and a tag (latest when none).
// A reference with a digest keeps it and gets no tag.
func normalizeName(name string) string {
	repo, suffix := name, ""
	if i := strings.IndexByte(name, '@'); i >= 0 {
		repo, suffix = name[:i], name[i:]
	} else if i := strings.LastIndexByte(name, ':'); i > strings.LastIndexByte(name, '/') {
		repo, suffix = name[:i], name[i:]
	} else {
		suffix = ":latest"
	}
	host, path, found := strings.Cut(repo, "/")
	if !found || (host != "localhost" && !strings.ContainsAny(host, ".:")) {
		host, path = "docker.io", repo
	}
	if host == "docker.io" && !strings.Contains(path, "/") {
		path = "library/" + path
	}
	return host + "/" + path + suffix
}

// addImage adds one image's layer, config and manifest, and returns their
// descriptors.
func (l *layout) addImage(img Image) (manifest, config, layer Descriptor, err error) {
	if img.OS == "" {
		img.OS = "linux"
	}
	tarball, err := layerTar(img.Files)
	if err != nil {
		return manifest, config, layer, err
	}
	diffID := sha256.Sum256(tarball)
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression) // no name, no time: reproducible
	if _, err := zw.Write(tarball); err != nil {
		return manifest, config, layer, err
	}
	if err := zw.Close(); err != nil {
		return manifest, config, layer, err
	}
	layer = l.add(MediaTypeLayer, gz.Bytes())
	cfg := map[string]any{
		"created":      l.created,
		"architecture": img.Arch,
		"os":           img.OS,
		"config":       img.Config,
		"rootfs": map[string]any{
			"type":     "layers",
			"diff_ids": []string{"sha256:" + hex.EncodeToString(diffID[:])},
		},
		"history": []map[string]any{{"created": l.created, "created_by": "proa/e2e/oci"}},
	}
	if img.Variant != "" {
		cfg["variant"] = img.Variant
	}
	if config, err = l.addJSON(MediaTypeConfig, cfg); err != nil {
		return manifest, config, layer, err
	}
	manifest, err = l.addJSON(MediaTypeManifest, map[string]any{
		"schemaVersion": 2,
		"mediaType":     MediaTypeManifest,
		"config":        config,
		"layers":        []Descriptor{layer},
		"annotations":   img.Config.Labels,
	})
	if err != nil {
		return manifest, config, layer, err
	}
	manifest.Platform = &Platform{Architecture: img.Arch, OS: img.OS, Variant: img.Variant}
	return manifest, config, layer, nil
}

// layerTar is the uncompressed layer: the files in path order, with their
// parent directories, every time stamp zero.
func layerTar(files []File) ([]byte, error) {
	entries := map[string]File{}
	for _, f := range files {
		p := strings.Trim(path.Clean("/"+f.Path), "/")
		if p == "" {
			return nil, fmt.Errorf("oci: file with empty path")
		}
		f.Path = p
		entries[p] = f
		for dir := path.Dir(p); dir != "."; dir = path.Dir(dir) {
			if _, ok := entries[dir]; !ok {
				entries[dir] = File{Path: dir, Dir: true, Mode: 0o755}
			}
		}
	}
	paths := make([]string, 0, len(entries))
	for p := range entries {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range paths {
		f := entries[p]
		h := &tar.Header{Name: p, Mode: f.Mode, Uid: f.UID, Gid: f.GID, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		switch {
		case f.Dir:
			h.Typeflag, h.Name = tar.TypeDir, p+"/"
		case f.Symlink != "":
			h.Typeflag, h.Linkname = tar.TypeSymlink, f.Symlink
		default:
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.Data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(f.Data); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func (l *layout) writeTar(w io.Writer, index, dockerManifest []byte) error {
	tw := tar.NewWriter(w)
	put := func(name string, data []byte) error {
		h := &tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	dir := func(name string) error {
		return tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, ModTime: time.Unix(0, 0), Typeflag: tar.TypeDir, Format: tar.FormatPAX})
	}
	if err := put("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	if err := put("index.json", index); err != nil {
		return err
	}
	if err := put("manifest.json", dockerManifest); err != nil {
		return err
	}
	if err := dir("blobs/"); err != nil {
		return err
	}
	if err := dir("blobs/sha256/"); err != nil {
		return err
	}
	for _, b := range l.blobs {
		if err := put("blobs/sha256/"+strings.TrimPrefix(b.digest, "sha256:"), b.data); err != nil {
			return err
		}
	}
	return tw.Close()
}

// Platforms proa is released for, as GOARCH and OCI variant.
var Platforms = []Platform{
	{OS: "linux", Architecture: "amd64"},
	{OS: "linux", Architecture: "arm64"},
	{OS: "linux", Architecture: "arm", Variant: "v7"},
	{OS: "linux", Architecture: "ppc64le"},
	{OS: "linux", Architecture: "s390x"},
	{OS: "linux", Architecture: "riscv64"},
}

// ProaImage is the image users get for one platform: nothing but the static
// binary at /proa, run as the unprivileged user 65532 (distroless's
// "nonroot"), with the OCI labels that say what it is and where it came
// from. The release and the real-node tests both build it here, so the tests
// run the very image users pull.
//
// org.opencontainers.image.source is not set here: the project has no public
// repository URL yet, and a made-up one would be worse than none. The
// release adds it when given one (make release SOURCE_URL=...); the
// Dockerfile has the same build argument.
func ProaImage(p Platform, binary []byte, version, revision string, created time.Time) Image {
	labels := map[string]string{
		"org.opencontainers.image.title":       "proa",
		"org.opencontainers.image.description": "Entrypoint for a Pod's main container: waits for sidecars, runs the command, stops the sidecars",
		"org.opencontainers.image.version":     version,
		"org.opencontainers.image.revision":    revision,
		"org.opencontainers.image.licenses":    "Apache-2.0",
		"org.opencontainers.image.created":     created.UTC().Format(time.RFC3339),
	}
	return Image{
		OS: p.OS, Arch: p.Architecture, Variant: p.Variant,
		Files: []File{{Path: "proa", Mode: 0o755, Data: binary}},
		Config: Config{
			Entrypoint: []string{"/proa"},
			User:       "65532:65532",
			Labels:     labels,
		},
	}
}
