package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"
)

// Targets of issue 13, for proa against the informer waiter.
const (
	scaleMemRatio    = 2.0                    // the informer's API-server memory per Pod over proa's, at least
	scaleReqRatio    = 2.0                    // the informer's requests per lifecycle over proa's, at least
	scaleHerdP99     = 100 * time.Millisecond // proa's reaction p99 in the herd, at N = 1,000
	scaleBackWithin  = 10 * time.Second       // every proa watching again after the restart
	scaleTargetPods  = 1000
	scaleRatioFormat = "%.1f×"
)

// scaleRow is one line of the side-by-side table.
type scaleRow struct {
	Figure   string             `json:"figure"`
	Proa     string             `json:"proa"`
	Informer string             `json:"informer"`
	Ratio    string             `json:"ratio"` // the informer's figure over proa's
	Target   string             `json:"target,omitempty"`
	Result   string             `json:"result,omitempty"`
	Numbers  map[string]float64 `json:"numbers,omitempty"`
}

type scaleReport struct {
	Machine  machine                       `json:"machine"`
	Started  time.Time                     `json:"started"`
	Took     string                        `json:"took"`
	Requests int                           `json:"requested_pods"`
	Idle     float64                       `json:"idle_window_s"`
	Rows     []scaleRow                    `json:"rows"`
	Notes    []string                      `json:"notes"`
	Tools    []*toolResult                 `json:"tools"`
	Summary  map[string]map[string]float64 `json:"summary"` // per tool: the numbers behind the rows
	Errors   []string                      `json:"errors,omitempty"`
}

// perPod are a tool's figures per waiting Pod (or per waiter), for the rows
// and the JSON.
type perPod struct {
	N                                   float64
	BinaryMiB                           float64
	PSSKiB, RSSMiB, AnonMiB             float64
	CPUStartMS, CPUIdleMSPerMin         float64
	APIRSSKiB, APIHeapKiB, APIGor       float64
	APICPUStartMS, APICPUIdleMSPerMin   float64
	StartList, StartWatch, StartGet     float64
	LifeList, LifeWatch, LifeGet, Life  float64
	FFList, FFWatch, FFGet, FF          float64 // the same without the restart's window
	HerdP50, HerdP95, HerdP99, HerdMax  float64 // ms
	RecvP50, RecvP95, RecvP99, RecvMax  float64 // ms, from the PATCH's receipt
	DecP50, DecP99, Burst               float64 // ms, from the waiter's decision; s
	HerdMissed                          float64
	Peak                                float64
	BackMax, BackP50                    float64 // s after the new server was ready
	RLists, RExpired, RFresh, RResumed  float64
	RNotBack, RExited, RFailed, RWrites float64
}

func summarize(r *toolResult) perPod {
	n := float64(max(r.N, 1))
	total := func(m map[string]int) float64 {
		t := 0
		for k, v := range m {
			if !strings.Contains(k, " ") {
				t += v
			}
		}
		return float64(t)
	}
	h := durations(r.Herd.Reactions)
	back := slices.Clone(r.Restart.Back)
	slices.Sort(back)
	p50 := math.NaN()
	if len(back) > 0 {
		p50 = back[len(back)/2]
	}
	minute := 60 / math.Max(r.IdleWindow, 1)
	return perPod{
		N: float64(r.N), BinaryMiB: float64(r.BinaryBytes) / (1 << 20),
		PSSKiB: float64(r.ClientPSS) / n / 1024, RSSMiB: float64(ints(r.ClientRSS).median()) / (1 << 20),
		AnonMiB:         float64(ints(r.ClientAnon).median()) / (1 << 20),
		CPUStartMS:      msf(durations(r.ClientCPUStart).median()),
		CPUIdleMSPerMin: msf(r.ClientCPUIdle) / n * minute,
		APIRSSKiB:       float64(r.APIRSSWaiting-r.APIRSSBefore) / n / 1024,
		APIHeapKiB:      (r.APIHeapWaiting - r.APIHeapBefore) / n / 1024,
		APIGor:          (r.APIGoroutinesWaiting - r.APIGoroutinesBefore) / n,
		APICPUStartMS:   r.APICPUStart / n * 1000,
		// The window's CPU less what the server used when nothing waited.
		APICPUIdleMSPerMin: (r.APICPUIdle - r.APIIdleRate*r.IdleWindow) / n * 1000 * minute,
		StartList:          float64(r.StartRequests["list"]) / n, StartWatch: float64(r.StartRequests["watch"]) / n,
		StartGet: float64(r.StartRequests["get"]) / n,
		LifeList: float64(r.LifecycleRequests["list"]) / n, LifeWatch: float64(r.LifecycleRequests["watch"]) / n,
		LifeGet: float64(r.LifecycleRequests["get"]) / n, Life: total(r.LifecycleRequests) / n,
		FFList: float64(r.FaultFree["list"]) / n, FFWatch: float64(r.FaultFree["watch"]) / n,
		FFGet: float64(r.FaultFree["get"]) / n, FF: total(r.FaultFree) / n,
		HerdP50: msf(h.median()), HerdP95: msf(h.pct(95)), HerdP99: msf(h.pct(99)), HerdMax: msf(h.max()),
		RecvP50: msf(durations(r.Herd.Received).median()), RecvP95: msf(durations(r.Herd.Received).pct(95)),
		RecvP99: msf(durations(r.Herd.Received).pct(99)), RecvMax: msf(durations(r.Herd.Received).max()),
		DecP50: msf(durations(r.Herd.Decided).median()), DecP99: msf(durations(r.Herd.Decided).pct(99)), Burst: r.Herd.Burst,
		HerdMissed: float64(r.Herd.Missed),
		Peak:       float64(maxInt(r.Restart.Bins)),
		BackMax:    maxF(back), BackP50: p50,
		RLists: float64(r.Restart.Counts["list"]), RExpired: float64(r.Restart.Expired),
		RFresh: float64(r.Restart.Fresh), RResumed: float64(r.Restart.Resumed),
		RNotBack: float64(r.Restart.NotBack), RExited: float64(r.Restart.Exited), RFailed: float64(r.Restart.Failed),
		RWrites: float64(r.Herd.Writes),
	}
}

// scaleRows builds the side-by-side table. Either tool may be missing.
func scaleRows(proa, inf *toolResult) []scaleRow {
	var p, i perPod
	has := func(r *toolResult) bool { return r != nil && r.N > 0 }
	if has(proa) {
		p = summarize(proa)
	}
	if has(inf) {
		i = summarize(inf)
	}
	both := has(proa) && has(inf)
	ratio := func(pv, iv float64) string {
		if !both || pv <= 0 || math.IsNaN(pv) || math.IsNaN(iv) {
			return "—"
		}
		return fmt.Sprintf(scaleRatioFormat, iv/pv)
	}
	cell := func(r *toolResult, f func(perPod) string, pp perPod) string {
		if !has(r) {
			return "—"
		}
		return f(pp)
	}
	row := func(figure string, f func(perPod) string, num func(perPod) float64) scaleRow {
		return scaleRow{Figure: figure, Proa: cell(proa, f, p), Informer: cell(inf, f, i), Ratio: ratio(num(p), num(i)),
			Numbers: map[string]float64{"proa": round2(num(p)), "informer": round2(num(i))}}
	}
	limit := ""
	if has(inf) && inf.Limit != "" {
		limit = " (" + inf.Limit + ")"
	}
	rows := []scaleRow{
		{Figure: "waiters at once (one Pod, token and mount namespace each)", Proa: cell(proa, func(x perPod) string { return fmt.Sprintf("%.0f", x.N) }, p),
			Informer: cell(inf, func(x perPod) string { return fmt.Sprintf("%.0f", x.N) }, i) + limit, Ratio: "—"},
		row("binary (stripped)", func(x perPod) string { return fmt.Sprintf("%.2f MiB", x.BinaryMiB) }, func(x perPod) float64 { return x.BinaryMiB }),
		row("client memory per Pod: PSS (shared pages split between the waiters)", func(x perPod) string { return fmt.Sprintf("%.0f KiB", x.PSSKiB) }, func(x perPod) float64 { return x.PSSKiB }),
		row("client memory per Pod: VmRSS, median (anonymous part)", func(x perPod) string { return fmt.Sprintf("%.2f MiB (%.2f MiB)", x.RSSMiB, x.AnonMiB) }, func(x perPod) float64 { return x.RSSMiB }),
		row("client CPU to start one waiter, median (exec → 10 s after all waited)", func(x perPod) string { return fmtMSf(x.CPUStartMS) }, func(x perPod) float64 { return x.CPUStartMS }),
		row("client CPU while idle, per waiter per minute (all N together)", func(x perPod) string {
			return fmt.Sprintf("%s (%s for %.0f)", fmtMSf(x.CPUIdleMSPerMin), fmtMSf(x.CPUIdleMSPerMin*x.N), x.N)
		}, func(x perPod) float64 { return x.CPUIdleMSPerMin }),
		row("API server memory per waiting Pod: VmRSS (/proc)", func(x perPod) string { return fmt.Sprintf("%.0f KiB", x.APIRSSKiB) }, func(x perPod) float64 { return x.APIRSSKiB }),
		row("API server memory per waiting Pod: live heap + stacks after GC (/metrics)", func(x perPod) string { return fmt.Sprintf("%.0f KiB (%.1f goroutines)", x.APIHeapKiB, x.APIGor) }, func(x perPod) float64 { return x.APIHeapKiB }),
		row("API server CPU to start one waiter", func(x perPod) string { return fmtMSf(x.APICPUStartMS) }, func(x perPod) float64 { return x.APICPUStartMS }),
		row("API server CPU while idle, per waiting Pod per minute (above its own idle)", func(x perPod) string { return fmtMSf(x.APICPUIdleMSPerMin) }, func(x perPod) float64 { return x.APICPUIdleMSPerMin }),
		row("requests per Pod to start waiting (audit log)", func(x perPod) string { return reqMix(x.StartList, x.StartWatch, x.StartGet) }, func(x perPod) float64 { return x.StartList + x.StartWatch + x.StartGet }),
		row("requests per fault-free lifecycle: start, wait, run, stop (audit log)", func(x perPod) string { return reqMix(x.FFList, x.FFWatch, x.FFGet) }, func(x perPod) float64 { return x.FF }),
		row("requests per lifecycle with the API server restart (audit log)", func(x perPod) string { return reqMix(x.LifeList, x.LifeWatch, x.LifeGet) }, func(x perPod) float64 { return x.Life }),
		row("herd: ready status written (the API server received the PATCH) → command started, p50 / p95 / p99 / max", func(x perPod) string {
			return fmt.Sprintf("%s / %s / %s / %s", fmtMSf(x.RecvP50), fmtMSf(x.RecvP95), fmtMSf(x.RecvP99), fmtMSf(x.RecvMax))
		}, func(x perPod) float64 { return x.RecvP99 }),
		row("herd: the waiter's own part, its \"sidecars ready\" → command started, p50 / p99; the burst's length", func(x perPod) string {
			return fmt.Sprintf("%s / %s; %.2f s", fmtMSf(x.DecP50), fmtMSf(x.DecP99), x.Burst)
		}, func(x perPod) float64 { return x.DecP99 }),
		row("herd: from the API server's completion of the PATCH (its audit time, late under load), p50 / p99", func(x perPod) string {
			return fmt.Sprintf("%s / %s", fmtMSf(x.HerdP50), fmtMSf(x.HerdP99))
		}, func(x perPod) float64 { return x.HerdP99 }),
		row("herd: commands that did not start (missed the status change)", func(x perPod) string { return fmt.Sprintf("%.0f of %.0f", x.HerdMissed, x.RWrites) }, func(x perPod) float64 { return math.NaN() }),
		row("restart: peak reconnect requests per second", func(x perPod) string { return fmt.Sprintf("%.0f/s", x.Peak) }, func(x perPod) float64 { return x.Peak }),
		row("restart: every watcher back, after the new server was ready (median)", func(x perPod) string {
			return fmt.Sprintf("%s (%s)", fmtSecs(x.BackMax), fmtSecs(x.BackP50))
		}, func(x perPod) float64 { return x.BackMax }),
		row("restart: LISTs / 410 Expired / fresh watches / resumed watches", func(x perPod) string {
			return fmt.Sprintf("%.0f / %.0f / %.0f / %.0f", x.RLists, x.RExpired, x.RFresh, x.RResumed)
		}, func(x perPod) float64 { return (x.RLists + x.RFresh + x.RResumed) / math.Max(x.N, 1) }),
		row("restart: waiters that exited / not back within 3 minutes", func(x perPod) string { return fmt.Sprintf("%.0f / %.0f", x.RExited, x.RNotBack) }, func(x perPod) float64 { return math.NaN() }),
	}
	find := func(prefix string) *scaleRow {
		for i := range rows {
			if strings.HasPrefix(rows[i].Figure, prefix) {
				return &rows[i]
			}
		}
		panic("no row " + prefix)
	}
	if both {
		mem := find("API server memory per waiting Pod: VmRSS")
		mem.Target = "proa ≤ ½ the informer's"
		mem.Result = passIf(i.APIRSSKiB >= scaleMemRatio*p.APIRSSKiB && p.APIRSSKiB > 0 || p.APIRSSKiB <= 0 && i.APIRSSKiB > 0)
		heap := find("API server memory per waiting Pod: live heap")
		heap.Target = mem.Target
		heap.Result = passIf(i.APIHeapKiB >= scaleMemRatio*p.APIHeapKiB)
		req := find("requests per fault-free lifecycle")
		req.Target = "proa ≤ ½ the informer's"
		req.Result = passIf(i.FF >= scaleReqRatio*p.FF)
		req2 := find("requests per lifecycle with the API server restart")
		req2.Target = req.Target
		req2.Result = passIf(i.Life >= scaleReqRatio*p.Life)
	}
	if has(proa) {
		h := find("herd: ready status written")
		h.Target = fmt.Sprintf("proa p99 < %s at N = %d", fmtMS(scaleHerdP99), scaleTargetPods)
		h.Result = passIf(p.RecvP99 < msf(scaleHerdP99) && p.HerdMissed == 0)
		if p.N < scaleTargetPods {
			h.Result += fmt.Sprintf(" (at N = %.0f)", p.N)
		}
		b := find("restart: every watcher back")
		b.Target = fmt.Sprintf("every proa within %s, 0 LISTs", fmtS(scaleBackWithin))
		b.Result = passIf(p.BackMax <= scaleBackWithin.Seconds() && p.RLists == 0 && p.RNotBack == 0 && p.RExited == 0)
	}
	return rows
}

func reqMix(list, watch, get float64) string {
	var parts []string
	for _, v := range []struct {
		n    float64
		verb string
	}{{list, "LIST"}, {watch, "WATCH"}, {get, "GET"}} {
		if v.n > 0 || v.verb == "WATCH" {
			parts = append(parts, fmt.Sprintf("%.2f %s", v.n, v.verb))
		}
	}
	return strings.Join(parts, " + ")
}

func fmtMSf(ms float64) string {
	if math.IsNaN(ms) {
		return "—"
	}
	return fmtMS(time.Duration(ms * 1e6))
}

// scaleNotes are the details under the table.
func scaleNotes(results []*toolResult) []string {
	var notes []string
	for _, r := range results {
		rs := r.Restart
		notes = append(notes, fmt.Sprintf("%s: %d waiters started in %s (%d at a time); API server VmRSS %s → %s, live heap + stacks %s → %s, goroutines %.0f → %.0f; its CPU to start them %.2f s, %.2f s in the %.0f s idle window (%.2f s when nothing waited); etcd CPU %.2f s to start, %.2f s idle",
			r.Tool, r.N, fmtS(time.Duration(r.StartSeconds*float64(time.Second))), r.Width,
			fmtMiB(r.APIRSSBefore), fmtMiB(r.APIRSSWaiting), fmtMiB(int64(r.APIHeapBefore)), fmtMiB(int64(r.APIHeapWaiting)),
			r.APIGoroutinesBefore, r.APIGoroutinesWaiting, r.APICPUStart, r.APICPUIdle, r.IdleWindow, r.APIIdleRate*r.IdleWindow,
			r.EtcdCPUStart, r.EtcdCPUIdle))
		notes = append(notes, fmt.Sprintf("%s restart: SIGTERM at t = 0, old server gone at +%s, new one ready at +%s; requests from t = 0 until all were back: %s; %d failed attempts logged",
			r.Tool, fmtS(rs.Stopped.Sub(rs.StopBegan)), fmtS(rs.Ready.Sub(rs.StopBegan)), fmtCounts(rs.Counts), rs.Failed))
		notes = append(notes, fmt.Sprintf("%s requests by verb: to start %s; whole run %s; exit codes %v",
			r.Tool, fmtCounts(r.StartRequests), fmtCounts(r.LifecycleRequests), r.ExitCodes))
	}
	return notes
}

func fmtCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", strings.ToUpper(k[:1])+k[1:], m[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func printScale(w io.Writer, rep *scaleReport) {
	m := rep.Machine
	fmt.Fprintf(w, "\nproa at scale, against a client-go informer waiter, %s (took %s)\n", rep.Started.UTC().Format("2006-01-02 15:04 UTC"), rep.Took)
	fmt.Fprintf(w, "machine: %s, %d cores, %d MiB; Linux %s (%s); %s; kube-apiserver %s, etcd %s; informer waiter: client-go %s\n\n",
		m.CPU, m.Cores, m.MemoryMiB, m.Kernel, m.OS, m.Go, m.APIServer, m.Etcd, "v0.34.4")
	fmt.Fprintln(w, "| figure | proa | informer (client-go) | informer ÷ proa | target | result |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|")
	for _, r := range rep.Rows {
		t, res := r.Target, r.Result
		if t == "" {
			t = "—"
		}
		if res == "" {
			res = "—"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", r.Figure, r.Proa, r.Informer, r.Ratio, t, res)
	}
	if len(rep.Notes) > 0 {
		fmt.Fprintln(w, "\nDetails:")
		for _, n := range rep.Notes {
			fmt.Fprintln(w, "- "+n)
		}
	}
	if len(rep.Errors) > 0 {
		fmt.Fprintln(w, "\nErrors:")
		for _, e := range rep.Errors {
			fmt.Fprintln(w, "- "+strings.ReplaceAll(e, "\n", "\n  "))
		}
	}
}

// writeScale writes scale.json, scale.md (the table) and reconnects.svg
// into dir.
func writeScale(dir string, rep *scaleReport) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	j, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	var md strings.Builder
	printScale(&md, rep)
	files := map[string][]byte{"scale.json": append(j, '\n'), "scale.md": []byte(md.String()), "reconnects.svg": reconnectSVG(rep.Tools)}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// numbers lists a summary's fields by name, leaving out those that are not
// numbers (NaN: nothing was measured), which JSON cannot hold.
func (p perPod) numbers() map[string]float64 {
	out := map[string]float64{}
	v := reflect.ValueOf(p)
	for i := range v.NumField() {
		if f := v.Field(i).Float(); !math.IsNaN(f) && !math.IsInf(f, 0) {
			out[v.Type().Field(i).Name] = round2(f)
		}
	}
	return out
}

// dropNaN removes the numbers JSON cannot hold from the rows.
func dropNaN(rows []scaleRow) {
	for _, r := range rows {
		for k, v := range r.Numbers {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				delete(r.Numbers, k)
			}
		}
	}
}

func findTool(results []*toolResult, name string) *toolResult {
	for _, r := range results {
		if r.Tool == name {
			return r
		}
	}
	return nil
}
