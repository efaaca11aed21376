// Command release makes the rest of a release from the binaries `make
// release` cross-compiled into DIST: the OCI image archive (one image per
// platform, scratch + /proa, user 65532, OCI labels; an index over them) and
// SHA256SUMS. Its output depends only on its input, so two releases of one
// commit are byte-for-byte identical (make release-check).
//
//	go run ./cmd/release -dist ../dist -image proa:1.2.3 -version 1.2.3 \
//	    -revision $(git rev-parse HEAD) -created $(git log -1 --format=%ct)
//
// It expects DIST/proa-linux-ARCH[-VARIANT] for every platform of
// oci.Platforms, and checks that each is a static ELF executable for its
// architecture before packing it.
package main

import (
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"proa/e2e/oci"
)

// Artefact names in DIST.
const (
	archiveName = "proa-image.oci.tar"
	sumsName    = "SHA256SUMS"
)

// binaryName is the file name of one platform's binary: proa-linux-arm-v7.
func binaryName(p oci.Platform) string {
	name := "proa-" + p.OS + "-" + p.Architecture
	if p.Variant != "" {
		name += "-" + p.Variant
	}
	return name
}

type config struct {
	dist, image, version, revision, source string
	created                                time.Time
}

// An OCI tag: what may follow the colon of IMAGE:TAG.
var tagRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

func parseFlags(args []string) (config, error) {
	var c config
	var created string
	fs := flag.NewFlagSet("release", flag.ContinueOnError)
	fs.StringVar(&c.dist, "dist", "", "directory holding the binaries; the archive and SHA256SUMS are written there")
	fs.StringVar(&c.image, "image", "", "image name and tag recorded in the archive, e.g. proa:1.2.3")
	fs.StringVar(&c.version, "version", "", "version label (org.opencontainers.image.version)")
	fs.StringVar(&c.revision, "revision", "", "source revision label (org.opencontainers.image.revision)")
	fs.StringVar(&created, "created", "", "creation time, Unix seconds (the commit time: SOURCE_DATE_EPOCH)")
	fs.StringVar(&c.source, "source", "", "source repository URL label (org.opencontainers.image.source); empty: no label")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	for _, f := range []struct{ name, v string }{{"dist", c.dist}, {"image", c.image}, {"version", c.version}, {"revision", c.revision}, {"created", created}} {
		if f.v == "" {
			return c, fmt.Errorf("-%s is required", f.name)
		}
	}
	if !tagRE.MatchString(c.version) {
		return c, fmt.Errorf("-version %q: not usable as an image tag (letters, digits, _ . -; at most 128)", c.version)
	}
	secs, err := strconv.ParseInt(created, 10, 64)
	if err != nil || secs <= 0 {
		return c, fmt.Errorf("-created %q: want Unix seconds, e.g. $(git log -1 --format=%%ct)", created)
	}
	c.created = time.Unix(secs, 0).UTC()
	return c, nil
}

func main() {
	c, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "release:", err)
		os.Exit(2)
	}
	if err := release(c); err != nil {
		fmt.Fprintln(os.Stderr, "release:", err)
		os.Exit(1)
	}
}

func release(c config) error {
	var images []oci.Image
	files := []string{}
	for _, p := range oci.Platforms {
		name := binaryName(p)
		data, err := os.ReadFile(filepath.Join(c.dist, name))
		if err != nil {
			return fmt.Errorf("%v (make release builds it)", err)
		}
		if err := checkBinary(data, p); err != nil {
			return fmt.Errorf("%s: %v", name, err)
		}
		img := oci.ProaImage(p, data, c.version, c.revision, c.created)
		if c.source != "" {
			img.Config.Labels["org.opencontainers.image.source"] = c.source
		}
		images = append(images, img)
		files = append(files, name)
	}
	if err := writeAtomic(filepath.Join(c.dist, archiveName), func(f *os.File) error {
		return oci.Write(f, c.image, c.created, images...)
	}); err != nil {
		return err
	}
	files = append(files, archiveName)
	slices.Sort(files)
	var sums strings.Builder
	for _, name := range files {
		data, err := os.ReadFile(filepath.Join(c.dist, name))
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		fmt.Fprintf(&sums, "%s  %s\n", hex.EncodeToString(sum[:]), name)
		fmt.Printf("%-26s %9d bytes\n", name, len(data))
	}
	if err := writeAtomic(filepath.Join(c.dist, sumsName), func(f *os.File) error {
		_, err := f.WriteString(sums.String())
		return err
	}); err != nil {
		return err
	}
	fmt.Printf("%-26s (sha256sum -c %s)\n", sumsName, sumsName)
	return nil
}

// elfMachines is the ELF machine, class and byte order of each GOARCH.
var elfMachines = map[string]struct {
	machine elf.Machine
	class   elf.Class
	order   binary.ByteOrder
}{
	"amd64":   {elf.EM_X86_64, elf.ELFCLASS64, binary.LittleEndian},
	"arm64":   {elf.EM_AARCH64, elf.ELFCLASS64, binary.LittleEndian},
	"arm":     {elf.EM_ARM, elf.ELFCLASS32, binary.LittleEndian},
	"ppc64le": {elf.EM_PPC64, elf.ELFCLASS64, binary.LittleEndian},
	"s390x":   {elf.EM_S390, elf.ELFCLASS64, binary.BigEndian},
	"riscv64": {elf.EM_RISCV, elf.ELFCLASS64, binary.LittleEndian},
}

// checkBinary makes sure data is a static Linux executable for p: a binary
// for the wrong machine, or one that needs a dynamic loader (cgo crept in),
// would make an image that cannot start.
func checkBinary(data []byte, p oci.Platform) error {
	want, ok := elfMachines[p.Architecture]
	if !ok {
		return fmt.Errorf("no ELF machine known for %s", p.Architecture)
	}
	f, err := elf.NewFile(strings.NewReader(string(data)))
	if err != nil {
		return err
	}
	defer f.Close()
	if f.Machine != want.machine || f.Class != want.class || f.ByteOrder != want.order {
		return fmt.Errorf("built for %v %v %v, want %v %v %v", f.Machine, f.Class, f.ByteOrder, want.machine, want.class, want.order)
	}
	if f.Type != elf.ET_EXEC {
		return fmt.Errorf("ELF type %v, want a static executable (ET_EXEC)", f.Type)
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return errors.New("dynamically linked (has an ELF interpreter): build with CGO_ENABLED=0")
		}
	}
	if f.Section(".symtab") != nil {
		return errors.New("not stripped: build with -ldflags=-s")
	}
	return nil
}

// writeAtomic writes path through a temporary file in its directory, so
// that a failed run leaves no half-written artefact.
func writeAtomic(path string, write func(*os.File) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := write(f); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %v", path, err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
