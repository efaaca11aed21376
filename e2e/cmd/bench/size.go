package main

import (
	"bufio"
	"bytes"
	"cmp"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// releaseFlags are how proa's README and Dockerfile build the shipped
// binary; the baseline is built the same way.
var releaseFlags = []string{"build", "-trimpath", "-ldflags=-s -w"}

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
	steps := []struct {
		dir, out, pkg string
		args          []string
	}{
		{repo, b.Proa, ".", releaseFlags},
		{e2e, b.Baseline, "./cmd/bench/baseline", releaseFlags},
		{repo, b.ProaFull, ".", []string{"build", "-trimpath"}},
		{e2e, b.BaselineFull, "./cmd/bench/baseline", []string{"build", "-trimpath"}},
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

// pkgSize is the size of one package's symbols in an unstripped binary.
type pkgSize struct {
	Pkg      string `json:"package"`
	Proa     int64  `json:"proa_bytes"`
	Baseline int64  `json:"baseline_bytes"`
}

func (p pkgSize) extra() int64 { return p.Proa - p.Baseline }

// packageSizes sums `go tool nm -size` by package for both unstripped
// binaries and returns the packages proa has more of, largest first.
// Symbol sizes cover code and data; the line tables that come with code
// add roughly a third again in the stripped binary.
func packageSizes(proa, baseline string) ([]pkgSize, error) {
	a, err := nmSizes(proa)
	if err != nil {
		return nil, err
	}
	b, err := nmSizes(baseline)
	if err != nil {
		return nil, err
	}
	var out []pkgSize
	for pkg, n := range a {
		if n > b[pkg] {
			out = append(out, pkgSize{Pkg: pkg, Proa: n, Baseline: b[pkg]})
		}
	}
	slices.SortFunc(out, func(x, y pkgSize) int { return cmp.Compare(y.extra(), x.extra()) })
	return out, nil
}

func nmSizes(bin string) (map[string]int64, error) {
	out, err := exec.Command("go", "tool", "nm", "-size", bin).Output()
	if err != nil {
		return nil, fmt.Errorf("go tool nm %s: %v", bin, err)
	}
	sizes := map[string]int64{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		// ADDRESS SIZE TYPE NAME, aligned with spaces; NAME may hold spaces.
		_, rest := cutField(sc.Text())
		size, rest := cutField(rest)
		_, name := cutField(rest)
		n, err := strconv.ParseInt(size, 10, 64)
		if err != nil || n == 0 || name == "" {
			continue
		}
		sizes[symbolPackage(name)] += n
	}
	return sizes, sc.Err()
}

// cutField splits off the first space-separated field of s.
func cutField(s string) (field, rest string) {
	s = strings.TrimLeft(s, " ")
	field, rest, _ = strings.Cut(s, " ")
	return field, strings.TrimLeft(rest, " ")
}

// symbolPackage is the import path a symbol belongs to: the part of its
// name before the first dot after the last slash (ignoring type
// arguments and receivers); "go:" and "type:" symbols count as such.
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
		return head[:slash+1+dot]
	}
	return head
}
