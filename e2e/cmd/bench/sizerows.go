package main

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

func sizeRows(rep *report, b binaries, variants []sizeVariant, detail func(string, ...any), fail func(string, error)) {
	proa, base := fileSize(b.Proa), fileSize(b.Baseline)
	if proa == 0 || base == 0 {
		fail("size", fmt.Errorf("could not stat %s or %s", b.Proa, b.Baseline))
		return
	}
	ratio := float64(proa) / float64(base)
	rep.Rows = append(rep.Rows, row{
		Figure: "static binary size",
		Value: fmt.Sprintf("%s (%d B) = %.3f × baseline (%s); built with %s", fmtMiB(proa), proa, ratio, fmtMiB(base),
			strings.Join(releaseFlags[1:], " ")),
		Target: fmt.Sprintf("< %s (scuttle, the smallest peer, built with the Go defaults) and ≤ %.2f × baseline", fmtMiB(sizeLimit), sizeRatioLimit),
		Result: passIf(proa < sizeLimit && ratio <= sizeRatioLimit),
		Numbers: map[string]float64{"proa_bytes": float64(proa), "baseline_bytes": float64(base),
			"ratio": float64(int(ratio*1000+0.5)) / 1000},
	})
	detail("baseline: e2e/cmd/bench/baseline (TLS with a CA pool, an HTTP/2 GET with a bearer token, JSON decoding, exec), built like proa: CGO_ENABLED=0 go build %s",
		strings.Join(releaseFlags[1:], " "))
	if len(variants) > 0 {
		var lines []string
		for _, v := range variants {
			lines = append(lines, fmt.Sprintf("%-24s proa %s, baseline %s, scuttle %s (go build %s)", v.Name+":",
				fmtMiB(v.Proa), fmtMiB(v.Baseline), fmtMiB(v.Scuttle), v.Flags))
		}
		rep.Flags = variants
		detail("size with other build flags (scuttle: kvij/scuttle d17ea9c measured once with the same flags and go1.26.8, issue 13):\n%s", strings.Join(lines, "\n"))
	}
	all, ps, bs, err := packageSizes(b.ProaFull, b.BaselineFull)
	if err != nil {
		fail("size", err)
		return
	}
	rep.Sizes = all
	var secs []string
	for _, name := range []string{".text", ".gopclntab", ".rodata", ".noptrdata", ".data"} {
		secs = append(secs, fmt.Sprintf("%s %s", name, fmtKiB(ps.Sections[name])))
	}
	detail("proa's sections (unstripped build; stripping removes only symbols and DWARF): %s", strings.Join(secs, ", "))
	groups := map[string]*pkgSize{}
	for _, s := range all {
		g := sizeGroup(s.Pkg)
		if groups[g] == nil {
			groups[g] = &pkgSize{Pkg: g}
		}
		groups[g].Proa += s.Proa
		groups[g].Baseline += s.Baseline
	}
	rep.Groups = nil
	for _, g := range groups {
		rep.Groups = append(rep.Groups, *g)
	}
	slices.SortFunc(rep.Groups, func(x, y pkgSize) int { return cmp.Compare(y.Proa, x.Proa) })
	var gl []string
	for _, g := range rep.Groups {
		gl = append(gl, fmt.Sprintf("%-42s %8s  (baseline %8s, %+6.0f KiB)", g.Pkg, fmtKiB(g.Proa), fmtKiB(g.Baseline), float64(g.extra())/1024))
	}
	detail("where proa's %s go, by what the packages are for (estimated from the unstripped build's symbols, each package's code with its share of .gopclntab; the rest is headers and alignment):\n%s",
		fmtKiB(proa), strings.Join(gl, "\n"))
	extra := slices.Clone(all)
	slices.SortFunc(extra, func(x, y pkgSize) int { return cmp.Compare(y.extra(), x.extra()) })
	var parts []string
	var total int64
	for i, s := range extra {
		if s.extra() <= 0 {
			break
		}
		total += s.extra()
		if i < 10 {
			parts = append(parts, fmt.Sprintf("%s +%s", s.Pkg, fmtKiB(s.extra())))
		}
	}
	detail("where proa's extra %s over the baseline goes, by package (the same estimate; +%s in all): %s",
		fmtKiB(proa-base), fmtKiB(total), strings.Join(parts, ", "))
	_ = bs
}
