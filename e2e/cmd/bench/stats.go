package main

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// durations summarises a sample of durations.
type durations []time.Duration

func (d durations) sorted() durations {
	s := slices.Clone(d)
	slices.Sort(s)
	return s
}

// median is the middle value (the mean of the two middle values for an
// even count).
func (d durations) median() time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := d.sorted()
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// pct is the nearest-rank percentile: the smallest value with at least p%
// of the sample at or below it (p95 of 30 runs is the 29th value).
func (d durations) pct(p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := d.sorted()
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func (d durations) min() time.Duration { return d.pct(0) }
func (d durations) max() time.Duration { return d.pct(100) }

// msf is a duration in milliseconds, for tables and JSON.
func msf(d time.Duration) float64 { return math.Round(float64(d)/1e4) / 100 }

func fmtMS(d time.Duration) string {
	switch a := d.Abs(); {
	case a < 10*time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/1e6)
	case a < 100*time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.0f ms", float64(d)/1e6)
}

func fmtS(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

// ints summarises a sample of byte counts.
type ints []int64

func (v ints) median() int64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func (v ints) min() int64 { return slices.Min(v) }
func (v ints) max() int64 { return slices.Max(v) }

func mib(b int64) float64 { return math.Round(float64(b)/(1<<20)*100) / 100 }

func fmtMiB(b int64) string { return fmt.Sprintf("%.2f MiB", float64(b)/(1<<20)) }
func fmtKiB(b int64) string { return fmt.Sprintf("%.0f KiB", float64(b)/(1<<10)) }
