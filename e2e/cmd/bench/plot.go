package main

import (
	"fmt"
	"math"
	"strings"
)

// reconnectSVG plots each tool's requests per second during the API
// server restart (t = 0 at SIGTERM), with the old server's exit and the
// new one's readiness marked, as an SVG image.
func reconnectSVG(results []*toolResult) []byte {
	const (
		width, height          = 760.0, 400.0
		left, right, top, bott = 64.0, 24.0, 40.0, 84.0
	)
	colors := map[string]string{"proa": "#1b7837", "informer": "#c2410c"}
	seconds, peak := 10, 1
	for _, r := range results {
		seconds = max(seconds, len(r.Restart.Bins))
		for _, b := range r.Restart.Bins {
			peak = max(peak, b)
		}
	}
	ymax := niceCeil(float64(peak))
	pw, ph := width-left-right, height-top-bott
	x := func(s float64) float64 { return left + s/float64(seconds)*pw }
	y := func(v float64) float64 { return top + ph - v/ymax*ph }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="12">`+"\n",
		width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	var title []string
	for _, r := range results {
		title = append(title, fmt.Sprintf("%s ×%d", r.Tool, r.N))
	}
	fmt.Fprintf(&b, `<text x="%.0f" y="22" font-size="14" font-weight="bold">Requests per second to kube-apiserver during its restart (%s)</text>`+"\n",
		left, strings.Join(title, ", "))
	// Axes and grid.
	for i := 0; i <= 5; i++ {
		v := ymax * float64(i) / 5
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", left, y(v), left+pw, y(v))
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="end">%g</text>`+"\n", left-6, y(v)+4, v)
	}
	step := max(1, int(math.Ceil(float64(seconds)/12)))
	for s := 0; s <= seconds; s += step {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#999"/>`+"\n", x(float64(s)), top+ph, x(float64(s)), top+ph+4)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%d</text>`+"\n", x(float64(s)), top+ph+18, s)
	}
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black"/>`+"\n", left, top+ph, left+pw, top+ph)
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black"/>`+"\n", left, top, left, top+ph)
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">seconds after SIGTERM to kube-apiserver (1-second bins)</text>`+"\n", left+pw/2, top+ph+36)
	fmt.Fprintf(&b, `<text transform="translate(16 %.1f) rotate(-90)" text-anchor="middle">requests/s (watch, list, get)</text>`+"\n", top+ph/2)

	for i, r := range results {
		col := colors[r.Tool]
		if col == "" {
			col = "#444"
		}
		rs := r.Restart
		// The restart's moments, as dashed lines in the tool's colour.
		for _, m := range []struct {
			at    float64
			label string
		}{
			{rs.Stopped.Sub(rs.StopBegan).Seconds(), "old server exited"},
			{rs.Ready.Sub(rs.StopBegan).Seconds(), "new server ready"},
		} {
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-dasharray="4 3" opacity="0.7"/>`+"\n",
				x(m.at), top, x(m.at), top+ph, col)
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" fill="%s" font-size="10">%s (%s)</text>`+"\n",
				x(m.at)+3, top+12+float64(i)*24+boolf(m.label == "new server ready")*12, col, m.label, r.Tool)
		}
		// The counts as steps.
		var pts []string
		for s, v := range rs.Bins {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f %.1f,%.1f", x(float64(s)), y(float64(v)), x(float64(s+1)), y(float64(v))))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", col, strings.Join(pts, " "))
		// Legend.
		ly := top + ph + 52 + float64(i)*18
		lx := left
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="3"/>`+"\n", lx, ly-4, lx+24, ly-4, col)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f">%s ×%d: peak %d/s; all watching again %s after the new server was ready; %d LISTs</text>`+"\n",
			lx+30, ly, r.Tool, r.N, maxInt(rs.Bins), fmtSecs(maxF(rs.Back)), rs.Counts["list"])
	}
	b.WriteString("</svg>\n")
	return []byte(b.String())
}

func boolf(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func maxInt(v []int) int {
	m := 0
	for _, x := range v {
		m = max(m, x)
	}
	return m
}

func maxF(v []float64) float64 {
	m := math.Inf(-1)
	for _, x := range v {
		m = math.Max(m, x)
	}
	if math.IsInf(m, -1) {
		return math.NaN()
	}
	return m
}

func fmtSecs(s float64) string {
	if math.IsNaN(s) {
		return "—"
	}
	return fmt.Sprintf("%.1f s", s)
}
