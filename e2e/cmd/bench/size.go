package main

import (
	"cmp"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// compileFlags are how the shipped binary is compiled (the Makefile's size
// target; the lead mirrors them in the release build and the Dockerfile):
// -gcflags=all=-l turns inlining off, which takes 7% off the binary (see the
// size variants). The baseline is built the same way; the unstripped builds
// the package breakdown reads differ only by keeping their symbols.
var compileFlags = []string{"-trimpath", "-gcflags=all=-l"}

// releaseFlags are compileFlags plus the linker's stripping.
var releaseFlags = append(append([]string{"build"}, compileFlags...), "-ldflags=-s -w")

// goBuild runs CGO_ENABLED=0 go ARGS... -o out PKG in dir.
func goBuild(dir, out, pkg string, args ...string) error {
	args = append(append(slices.Clone(args), "-o", out), pkg)
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s in %s: %v\n%s", strings.Join(args, " "), dir, err, b)
	}
	return nil
}

// binaries are the programs the benchmark builds.
type binaries struct {
	Proa, ProaFull         string // stripped (shipped) and unstripped proa
	Baseline, BaselineFull string
	Stamp                  string // the command proa runs
}

// build builds proa from the repository root and the baseline and stamp
// programs from this module, into dir.
func build(repo, e2e, dir string) (binaries, error) {
	b := binaries{
		Proa: filepath.Join(dir, "proa"), ProaFull: filepath.Join(dir, "proa.full"),
		Baseline: filepath.Join(dir, "baseline"), BaselineFull: filepath.Join(dir, "baseline.full"),
		Stamp: filepath.Join(dir, "stamp"),
	}
	full := append([]string{"build"}, compileFlags...)
	steps := []struct {
		dir, out, pkg string
		args          []string
	}{
		{repo, b.Proa, ".", releaseFlags},
		{e2e, b.Baseline, "./cmd/bench/baseline", releaseFlags},
		{repo, b.ProaFull, ".", full},
		{e2e, b.BaselineFull, "./cmd/bench/baseline", full},
		{e2e, b.Stamp, "./cmd/bench/stamp", releaseFlags},
	}
	for _, s := range steps {
		if err := goBuild(s.dir, s.out, s.pkg, s.args...); err != nil {
			return b, err
		}
	}
	return b, nil
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// sizeVariant is proa and the baseline built with one set of flags, and
// scuttle (kvij/scuttle d17ea9c, the smallest peer) as measured with the
// same flags on the machine of issue 13 (its source is not at hand here).
type sizeVariant struct {
	Name     string `json:"name"`
	Flags    string `json:"flags"`
	Proa     int64  `json:"proa_bytes"`
	Baseline int64  `json:"baseline_bytes"`
	Scuttle  int64  `json:"scuttle_bytes_measured_once"`
}

var sizeVariants = []struct {
	name    string
	args    []string
	scuttle int64
}{
	{"the Go defaults", []string{"-trimpath", "-ldflags=-s -w"}, 6246562},
	{"no inlining", []string{"-trimpath", "-gcflags=all=-l", "-ldflags=-s -w"}, 5828770},
	{"no HTTP/2", []string{"-trimpath", "-tags=nethttpomithttp2", "-ldflags=-s -w"}, 5857442},
	{"no inlining, no HTTP/2", []string{"-trimpath", "-tags=nethttpomithttp2", "-gcflags=all=-l", "-ldflags=-s -w"}, 5464226},
}

// buildVariants builds proa and the baseline with each of sizeVariants.
func buildVariants(repo, e2e, dir string) ([]sizeVariant, error) {
	var out []sizeVariant
	for i, v := range sizeVariants {
		p, b := filepath.Join(dir, fmt.Sprintf("proa.v%d", i)), filepath.Join(dir, fmt.Sprintf("baseline.v%d", i))
		args := append([]string{"build"}, v.args...)
		if err := goBuild(repo, p, ".", args...); err != nil {
			return nil, err
		}
		if err := goBuild(e2e, b, "./cmd/bench/baseline", args...); err != nil {
			return nil, err
		}
		out = append(out, sizeVariant{Name: v.name, Flags: strings.Join(v.args, " "), Proa: fileSize(p),
			Baseline: fileSize(b), Scuttle: v.scuttle})
	}
	return out, nil
}

// pkgSize is one package's share of a stripped binary, estimated from an
// unstripped build of it: the sizes of its symbols (code and data; not
// zero-filled data, which takes no room in the file), with its code's
// share of the function tables (.gopclntab, which stripping keeps: Go
// needs them for stack traces and garbage collection) added to its code in
// proportion.
type pkgSize struct {
	Pkg      string `json:"package"`
	Proa     int64  `json:"proa_bytes"`
	Baseline int64  `json:"baseline_bytes"`
}

func (p pkgSize) extra() int64 { return p.Proa - p.Baseline }

// binarySizes is a binary's estimated bytes by package and its sections.
type binarySizes struct {
	Pkgs     map[string]int64
	Sections map[string]int64
}

// elfSizes reads an unstripped binary's symbol table.
func elfSizes(bin string) (binarySizes, error) {
	f, err := elf.Open(bin)
	if err != nil {
		return binarySizes{}, err
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		return binarySizes{}, fmt.Errorf("%s: %w", bin, err)
	}
	s := binarySizes{Pkgs: map[string]int64{}, Sections: map[string]int64{}}
	for _, sec := range f.Sections {
		if sec.Type != elf.SHT_NOBITS && !strings.HasPrefix(sec.Name, ".debug") && !strings.Contains(sec.Name, "str") && sec.Name != ".symtab" {
			s.Sections[sec.Name] = int64(sec.Size)
		}
	}
	text := map[string]int64{}
	var textTotal int64
	for _, sym := range syms {
		if sym.Section == elf.SHN_UNDEF || int(sym.Section) >= len(f.Sections) || sym.Size == 0 {
			continue
		}
		sec := f.Sections[sym.Section]
		if sec.Type == elf.SHT_NOBITS {
			continue
		}
		pkg := symbolPackage(sym.Name)
		if sec.Name == ".text" {
			text[pkg] += int64(sym.Size)
			textTotal += int64(sym.Size)
		} else {
			s.Pkgs[pkg] += int64(sym.Size)
		}
	}
	tables := s.Sections[".gopclntab"]
	for pkg, n := range text {
		s.Pkgs[pkg] += n + n*tables/max(textTotal, 1)
	}
	return s, nil
}

// packageSizes returns every package of either binary, largest first in proa.
func packageSizes(proa, baseline string) (all []pkgSize, p, b binarySizes, err error) {
	if p, err = elfSizes(proa); err != nil {
		return nil, p, b, err
	}
	if b, err = elfSizes(baseline); err != nil {
		return nil, p, b, err
	}
	for pkg, n := range p.Pkgs {
		all = append(all, pkgSize{Pkg: pkg, Proa: n, Baseline: b.Pkgs[pkg]})
	}
	for pkg, n := range b.Pkgs {
		if _, ok := p.Pkgs[pkg]; !ok {
			all = append(all, pkgSize{Pkg: pkg, Baseline: n})
		}
	}
	slices.SortFunc(all, func(x, y pkgSize) int { return cmp.Or(cmp.Compare(y.Proa, x.Proa), strings.Compare(x.Pkg, y.Pkg)) })
	return all, p, b, nil
}

// sizeGroup names what a package is there for, to say where the bytes go.
func sizeGroup(pkg string) string {
	has := func(prefixes ...string) bool {
		for _, p := range prefixes {
			if pkg == p || strings.HasPrefix(pkg, p+"/") {
				return true
			}
		}
		return false
	}
	switch {
	case pkg == "main":
		return "proa's own code"
	case has("log/slog"):
		return "log/slog"
	case pkg == httpTwo || has("vendor/golang.org/x/net/http2"):
		return "HTTP/2 (net/http's bundled copy, hpack)"
	case has("net/http", "net/url", "net/textproto", "mime", "compress", "hash/crc32", "bufio"):
		return "HTTP/1 client, URLs, MIME, gzip"
	case has("crypto", "vendor/golang.org/x/crypto", "math/big", "encoding/asn1", "encoding/pem", "encoding/hex", "encoding/base64", "encoding/binary", "hash", "math/rand"):
		return "TLS, X.509 and cryptography"
	case has("net", "vendor/golang.org/x/net", "vendor/golang.org/x/text", "internal/nettrace", "internal/singleflight"):
		return "net: sockets, DNS, IDNA"
	case has("encoding/json", "reflect", "internal/reflectlite", "encoding"):
		return "encoding/json and reflection"
	case has("fmt", "strconv", "internal/strconv", "strings", "bytes", "unicode", "slices", "sort", "maps", "iter", "container", "internal/fmtsort", "internal/itoa", "internal/bytealg", "internal/stringslite", "math"):
		return "fmt, strconv, strings, slices"
	case has("os", "syscall", "internal/poll", "internal/syscall", "io", "path", "time", "context", "errors", "internal/filepathlite", "internal/testlog", "internal/godebug", "internal/bisect", "runtime/debug", "internal/byteorder"):
		return "os, exec, signals, syscalls, time"
	default:
		return "runtime, sync and type data"
	}
}

// httpTwo is the pseudo-package the HTTP/2 symbols of net/http are counted
// under (net/http bundles golang.org/x/net/http2 as net/http.http2*).
const httpTwo = "net/http (HTTP/2)"

// symbolPackage is the import path a symbol belongs to: the part of its
// name before the first dot after the last slash (ignoring type
// arguments and receivers); "go:" and "type:" symbols count as such, and
// net/http's bundled HTTP/2 as httpTwo.
func symbolPackage(sym string) string {
	for _, p := range []string{"go:", "type:"} {
		if strings.HasPrefix(sym, p) {
			return p + "*"
		}
	}
	head := sym
	if i := strings.IndexAny(head, "[("); i >= 0 {
		head = head[:i]
	}
	slash := strings.LastIndexByte(head, '/')
	if dot := strings.IndexByte(head[slash+1:], '.'); dot >= 0 {
		pkg := head[:slash+1+dot]
		if pkg == "net/http" && strings.HasPrefix(sym[len(pkg):], ".http2") || strings.HasPrefix(sym, "net/http.(*http2") {
			return httpTwo
		}
		return pkg
	}
	return head
}
