package main

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"time"
)

// proa's watch timing, as in the repository's watch.go: after a clean end
// of a stream proa watches again within a random second; after a failure it
// waits d/2 + rand(d), d starting at 0.8 s and doubling up to 30 s; each
// watch asks for timeoutSeconds uniform in 300..600.
const (
	modelResumeJitter = time.Second
	modelBackoffFirst = 800 * time.Millisecond
	modelBackoffMax   = 30 * time.Second
	modelTimeoutMin   = 300
	modelTimeoutMax   = 600
)

// herd is the model of n proa whose streams all end at t=0 because the API
// server went away, and which are answered again from t=outage on. The
// server is assumed to refuse connections at once while it is away and to
// take every request once it is back (no backlog, no 429s): what the
// clients alone do.
type herd struct {
	N                int
	Outage           time.Duration
	FailedPerProa    float64       // failed attempts per proa during the outage
	PeakDuring       int           // most attempts in one second during the outage
	Back50, Back99   time.Duration // when proa are watching again, after the server is back
	BackMax          time.Duration
	PeakAfter        int // most successful watches in one second after the server is back
	FirstSecondAfter int // successful watches in the first second after it is back
}

func modelHerd(n int, outage time.Duration, seed uint64) herd {
	r := rand.New(rand.NewPCG(seed, 1))
	h := herd{N: n, Outage: outage}
	during := map[int]int{}
	after := map[int]int{}
	var back []time.Duration
	failed := 0
	for range n {
		t := time.Duration(r.Int64N(int64(modelResumeJitter)))
		d := modelBackoffFirst
		for t < outage {
			failed++
			during[int(t/time.Second)]++
			t += d/2 + time.Duration(r.Int64N(int64(d)))
			d = min(2*d, modelBackoffMax)
		}
		back = append(back, t-outage)
		after[int((t-outage)/time.Second)]++
	}
	slices.Sort(back)
	h.FailedPerProa = float64(failed) / float64(n)
	for _, c := range during {
		h.PeakDuring = max(h.PeakDuring, c)
	}
	for _, c := range after {
		h.PeakAfter = max(h.PeakAfter, c)
	}
	h.FirstSecondAfter = after[0]
	h.Back50, h.Back99, h.BackMax = back[n/2], back[n*99/100], back[n-1]
	return h
}

// modelDetails are the figures the README's estimate for many Pods uses.
func modelDetails(n int, openCPU time.Duration, detail func(string, ...any)) []herd {
	meanTimeout := float64(modelTimeoutMin+modelTimeoutMax) / 2
	detail("model, %d proa in steady state: each watch lasts timeoutSeconds, uniform %d–%d s (mean %.0f s), then resumes from its resourceVersion: %.1f watch requests/s, no LIST; the server pushes a bookmark to each watch about once a minute: %.0f bookmark events/s",
		n, modelTimeoutMin, modelTimeoutMax, meanTimeout, float64(n)/meanTimeout, float64(n)/60)
	var hs []herd
	for _, outage := range []time.Duration{2 * time.Second, 10 * time.Second, 60 * time.Second, 5 * time.Minute} {
		h := modelHerd(n, outage, 6)
		hs = append(hs, h)
		cpu := ""
		if openCPU > 0 {
			cpu = fmt.Sprintf(" (at %s of API server CPU per new connection and watch, as measured: %.1f CPU-seconds in that second)",
				fmtMS(openCPU), float64(h.PeakAfter)*openCPU.Seconds())
		}
		detail("model, %d proa, API server away for %s: %.1f failed attempts per proa (at most %d in one second); once it is back, half are watching again within %s, 99%% within %s, all within %s; at most %d new watches in one second%s",
			n, secs(outage), h.FailedPerProa, h.PeakDuring, fmtS(h.Back50), fmtS(h.Back99), fmtS(h.BackMax), h.PeakAfter, cpu)
	}
	return hs
}
