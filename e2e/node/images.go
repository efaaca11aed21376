package node

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"proa/e2e/oci"
)

// The node's images, imported from OCI archives written by package oci:
// nothing is pulled from a registry (Pods use imagePullPolicy: Never).
const (
	PauseImage = "proa-e2e.local/pause:1" // containerd's sandbox_image
	// ProaImage is oci.ProaImage of proa built as released: the image users get.
	ProaImage = "proa-e2e.local/proa:e2e"
	// AppWithProaImage is what users build FROM their application with
	// COPY --from=proa /proa /proa: proa's image plus the test
	// application at /app (entrypoint /proa, user 65532, as proa's image).
	AppWithProaImage = "proa-e2e.local/app-with-proa:1"
	// AppImage is an application image without proa: /app only.
	AppImage = "proa-e2e.local/app:1"
	// SidecarImage holds the HTTP sidecar at /sidecar, a copy of it at
	// /usr/local/bin/envoy (an executable of that name, for -k envoy), and
	// the mesh-like proxy at /mesh.
	SidecarImage = "proa-e2e.local/sidecar:1"
	// BusyboxImage is Debian's static busybox with every applet in /bin.
	BusyboxImage = "proa-e2e.local/busybox:1"
	// BusyboxWithProaImage is proa's image plus busybox: an application
	// image with /proa, sh and wget, as the examples assume.
	BusyboxWithProaImage = "proa-e2e.local/busybox-with-proa:1"
)

// Images is what the node's image building starts from.
type images struct {
	proa, testbin []byte
	busybox       []oci.File
	version, rev  string
	created       time.Time
}

// loadImageInputs reads the binaries and what the labels say.
func loadImageInputs(p plan) (*images, error) {
	im := &images{version: "0.0.0-e2e", rev: "unknown", created: time.Unix(0, 0)}
	var err error
	if im.proa, err = os.ReadFile(p.Proa); err != nil {
		return nil, err
	}
	if im.testbin, err = os.ReadFile(p.Testbin); err != nil {
		return nil, err
	}
	if out, err := exec.Command("git", "-C", p.Repo, "log", "-1", "--format=%H %ct").Output(); err == nil {
		if f := strings.Fields(string(out)); len(f) == 2 {
			im.rev = f[0]
			if sec, err := strconv.ParseInt(f[1], 10, 64); err == nil {
				im.created = time.Unix(sec, 0)
			}
		}
	}
	bb, err := os.ReadFile(Busybox)
	if err != nil {
		return nil, err
	}
	list, err := exec.Command(Busybox, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list: %w", Busybox, err)
	}
	im.busybox = []oci.File{{Path: "bin/busybox", Mode: 0o755, Data: bb}}
	for _, applet := range strings.Fields(string(list)) {
		if applet != "busybox" {
			im.busybox = append(im.busybox, oci.File{Path: "bin/" + applet, Symlink: "busybox"})
		}
	}
	return im, nil
}

func platform() oci.Platform {
	for _, p := range oci.Platforms {
		if p.Architecture == runtime.GOARCH {
			return p
		}
	}
	return oci.Platform{OS: "linux", Architecture: runtime.GOARCH}
}

// Testbin is the test program as a file of an image, at path; its base
// name chooses its role (see package testbin).
func (n *Node) Testbin(path string) oci.File {
	return oci.File{Path: path, Mode: 0o755, Data: n.images.testbin}
}

// BusyboxFiles are /bin/busybox and a link in /bin for each applet.
func (n *Node) BusyboxFiles() []oci.File { return n.images.busybox }

// ProaImageConfig is proa's image as users get it (oci.ProaImage).
func (n *Node) ProaImageConfig() oci.Image {
	im := n.images
	return oci.ProaImage(platform(), im.proa, im.version, im.rev, im.created)
}

// WithProa is img with proa's image's files and configuration under it, as
// `FROM proa` plus img's files would give.
func (n *Node) WithProa(files ...oci.File) oci.Image {
	img := n.ProaImageConfig()
	img.Files = append(img.Files, files...)
	img.Config.Env = append(img.Config.Env, "PATH=/usr/local/bin:/usr/bin:/bin")
	return img
}

// Plain is an image of files with entrypoint, for the node's platform.
func Plain(entrypoint []string, files ...oci.File) oci.Image {
	p := platform()
	return oci.Image{OS: p.OS, Arch: p.Architecture, Variant: p.Variant, Files: files,
		Config: oci.Config{Entrypoint: entrypoint, Env: []string{"PATH=/usr/local/bin:/usr/bin:/bin"}}}
}

// baseImages are the images every scenario may use.
func (n *Node) baseImages() map[string]oci.Image {
	return map[string]oci.Image{
		PauseImage:       Plain([]string{"/pause"}, n.Testbin("pause")),
		ProaImage:        n.ProaImageConfig(),
		AppWithProaImage: n.WithProa(n.Testbin("app")),
		AppImage:         Plain([]string{"/app"}, n.Testbin("app")),
		SidecarImage: Plain([]string{"/sidecar"}, n.Testbin("sidecar"), n.Testbin("usr/local/bin/envoy"),
			oci.File{Path: "mesh", Symlink: "sidecar"}),
		BusyboxImage:         Plain([]string{"/bin/sh"}, n.BusyboxFiles()...),
		BusyboxWithProaImage: n.WithProa(n.BusyboxFiles()...),
	}
}

// AddImage writes img as an OCI archive named ref and imports it into
// containerd. Adding the same ref twice imports it once.
func (n *Node) AddImage(ctx context.Context, ref string, img oci.Image) error {
	n.imgMu.Lock()
	once, ok := n.imported[ref]
	if !ok {
		once = &imageOnce{}
		n.imported[ref] = once
	}
	n.imgMu.Unlock()
	once.Do(func() {
		var buf bytes.Buffer
		if once.err = oci.Write(&buf, ref, time.Unix(0, 0), img); once.err != nil {
			return
		}
		archive := filepath.Join(n.Dir, "images", strings.NewReplacer("/", "_", ":", "_").Replace(ref)+".tar")
		if once.err = os.MkdirAll(filepath.Dir(archive), 0o755); once.err != nil {
			return
		}
		if once.err = os.WriteFile(archive, buf.Bytes(), 0o644); once.err != nil {
			return
		}
		once.err = n.importImage(ctx, archive)
	})
	return once.err
}

type imageOnce struct {
	sync.Once
	err error
}

// addBaseImages builds and imports the base images, two at a time.
func (n *Node) addBaseImages(ctx context.Context) error {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 2)
	errs := make(chan error, 16)
	for ref, img := range n.baseImages() {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := n.AddImage(ctx, ref, img); err != nil {
				errs <- fmt.Errorf("image %s: %w", ref, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}
