package main

import (
	"fmt"
	"strings"
	"time"
)

func idleRows(rep *report, runs []idleRun, detail func(string, ...any)) {
	var hwm, rss, anon, file ints
	var cpuLate, onEarly, onLate, onIdle, podinit durations
	threads := 0
	for _, r := range runs {
		hwm = append(hwm, r.Early.VmHWM)
		rss = append(rss, r.Early.VmRSS)
		anon = append(anon, r.Early.RssAnon)
		file = append(file, r.Early.RssFile)
		cpuLate = append(cpuLate, r.Late.CPU())
		onEarly = append(onEarly, r.onCPU(r.Early))
		onLate = append(onLate, r.onCPU(r.Late))
		onIdle = append(onIdle, r.onCPU(r.Late)-r.onCPU(r.Early))
		podinit = append(podinit, r.Exec.Process)
		threads = max(threads, r.Early.Threads)
	}
	n := len(runs)
	rep.Rows = append(rep.Rows, row{
		Figure: fmt.Sprintf("peak resident memory (VmHWM) %s into a wait", secs(rssSampleAfter)),
		Value:  fmt.Sprintf("%s (median of %d; %s–%s)", fmtMiB(hwm.median()), n, fmtMiB(hwm.min()), fmtMiB(hwm.max())),
		Target: "< 12 MiB",
		Result: passIf(hwm.median() < rssLimit),
		Numbers: map[string]float64{"vmhwm_mib": mib(hwm.median()), "vmhwm_min_mib": mib(hwm.min()),
			"vmhwm_max_mib": mib(hwm.max()), "vmrss_mib": mib(rss.median()),
			"rss_anon_mib": mib(anon.median()), "rss_file_mib": mib(file.median())},
	})
	detail("memory %s into the wait (medians): VmHWM %s, VmRSS %s = RssAnon %s (heap, stacks, runtime) + RssFile %s (the binary's pages in use); up to %d threads",
		secs(rssSampleAfter), fmtMiB(hwm.median()), fmtMiB(rss.median()), fmtMiB(anon.median()), fmtMiB(file.median()), threads)
	rep.Rows = append(rep.Rows, row{
		Figure: fmt.Sprintf("CPU of a %s idle wait", secs(cpuSampleAfter)),
		Value: fmt.Sprintf("%s (median of %d, %s–%s; utime+stime %d ms, counted in 10 ms ticks)",
			fmtMS(onLate.median()), n, fmtMS(onLate.min()), fmtMS(onLate.max()), cpuLate.median().Milliseconds()),
		Target: "< 50 ms",
		Result: passIf(onLate.median() < cpuLimit && cpuLate.median()-podinit.median() < cpuLimit),
		Numbers: map[string]float64{"cpu_ms": msf(onLate.median()), "utime_stime_ms": msf(cpuLate.median()),
			"cpu_first_10s_ms": msf(onEarly.median()), "cpu_10s_to_60s_ms": msf(onIdle.median()),
			"min_ms": msf(onLate.min()), "max_ms": msf(onLate.max())},
	})
	detail("CPU: the figure is proa's threads' exact run time from /proc/PID/task/*/schedstat, from its exec on (the harness's podinit runs %s in the same process before it executes proa; that is subtracted). utime+stime from /proc/PID/stat counts 10 ms ticks and includes podinit's share. Of the figure, the first %s took %s (start-up, TLS handshake, first Pod state) and the next %s %s (the idle watch: HTTP/2 pings, bookmarks, progress logs)",
		fmtMS(podinit.median()), secs(rssSampleAfter), fmtMS(onEarly.median()),
		secs(cpuSampleAfter-rssSampleAfter), fmtMS(onIdle.median()))
}

func lifecycleRows(rep *report, ls []lifecycle, detail func(string, ...any)) {
	var reaction, toReq, toExit durations
	oneWatch := 0
	var bad []string
	var uri string
	for i, l := range ls {
		reaction = append(reaction, l.Reaction)
		toReq = append(toReq, l.ToShutdownReq)
		toExit = append(toExit, l.ToExit)
		ok := len(l.Requests) == 1 && l.Requests[0].Verb == "watch" && l.Requests[0].ResponseStatus.Code == 200
		if ok {
			q := queryOf(l.Requests[0])
			ok = q.Get("watch") != "" && q.Get("resourceVersion") == "" &&
				strings.HasPrefix(q.Get("fieldSelector"), "metadata.name=") && q.Get("allowWatchBookmarks") == "true"
			uri = l.Requests[0].RequestURI
		}
		if ok {
			oneWatch++
		} else {
			bad = append(bad, fmt.Sprintf("lifecycle %d: %s", i+1, codes(l.Requests)))
		}
	}
	n := len(ls)
	rep.Rows = append(rep.Rows,
		latencyRow("reaction: ready status written → command started", "median < 10 ms, p95 < 50 ms",
			reaction, fmt.Sprintf("%d runs; %s–%s", n, fmtMS(reaction.min()), fmtMS(reaction.max())),
			reaction.median() < reactionMedian && reaction.pct(95) < reactionP95),
		latencyRow("shutdown: command exited → sidecar got the shutdown request", "median < 10 ms",
			toReq, fmt.Sprintf("%d runs", n), toReq.median() < shutdownMedian),
		latencyRow("shutdown: sidecar terminated status written → proa exited", "median < 10 ms",
			toExit, fmt.Sprintf("%d runs", n), toExit.median() < shutdownMedian))
	rep.Rows = append(rep.Rows, row{
		Figure:  "API requests per lifecycle (audit log)",
		Value:   fmt.Sprintf("1 WATCH, 0 LIST, 0 other in %d of %d lifecycles", oneWatch, n),
		Target:  "exactly 1 WATCH, no LIST",
		Result:  passIf(oneWatch == n),
		Numbers: map[string]float64{"lifecycles": float64(n), "one_watch_only": float64(oneWatch)},
	})
	detail("latencies: the ready and terminated times are when the kubelet's status PATCH completed; \"command started\" and \"command exited\" are written by the command itself (e2e/cmd/bench/stamp, a 1.5 MB Go program that stamps the time first thing); \"shutdown request\" is when the sidecar's /quit handler ran; \"proa exited\" is when the kubelet's wait for proa's process returned")
	if uri != "" {
		detail("the one request of a lifecycle: WATCH %s", uri)
	}
	for _, b := range bad {
		detail("unexpected requests: %s", b)
	}
}

func restartRows(rep *report, res restartResult, verbose bool, detail func(string, ...any)) {
	var reconnect durations
	one, firstRV, lists, failures, watches, expired := 0, 0, 0, 0, 0, 0
	for _, p := range res.Pods {
		reconnect = append(reconnect, p.Reconnect)
		c := requestCounts(p.Requests)
		lists += c["list"]
		w := 0
		for _, r := range p.During {
			if r.Verb == "watch" && r.RequestReceived.After(res.Stopped) {
				w++
			}
		}
		watches += w
		if w == 1 && c["list"] == 0 && c["get"] == 0 && p.ExitCode == 0 {
			one++
		}
		if queryOf(p.First).Get("resourceVersion") != "" {
			firstRV++
		}
		for _, a := range p.Attempts {
			if strings.Contains(a, "410") {
				expired++
				break
			}
		}
		failures += len(p.Failures)
	}
	n := len(res.Pods)
	spread := reconnect.max() - reconnect.min()
	jitter := n < 2 || spread > 0
	value := fmt.Sprintf("%.1f WATCH per proa on the new server (%d of %d proa: exactly 1), %d LIST", float64(watches)/float64(max(n, 1)), one, n, lists)
	if expired > 0 {
		value += fmt.Sprintf("; %d of %d resumed from their resourceVersion and got 410 Expired, then watched without one", expired, n)
	}
	value += fmt.Sprintf("; watching again %s–%s after the old server exited (the new one answered /readyz after %s)",
		fmtS(reconnect.min()), fmtS(reconnect.max()), fmtS(res.Ready.Sub(res.Stopped)))
	rep.Rows = append(rep.Rows, row{
		Figure: "API requests across a kube-apiserver restart",
		Value:  value,
		Target: "one resumed WATCH per reconnect, no LIST, with jitter",
		Result: passIf(one == n && lists == 0 && jitter),
		Numbers: map[string]float64{"pods": float64(n), "watches_after_restart": float64(watches), "exactly_one": float64(one),
			"first_from_resource_version": float64(firstRV), "expired_410": float64(expired),
			"lists": float64(lists), "failed_attempts": float64(failures),
			"reconnect_min_s": round2(reconnect.min().Seconds()), "reconnect_median_s": round2(reconnect.median().Seconds()),
			"reconnect_max_s": round2(reconnect.max().Seconds()), "stop_s": round2(res.Stopped.Sub(res.StopBegan).Seconds()),
			"start_s": round2(res.Ready.Sub(res.Stopped).Seconds())},
	})
	at := func(t time.Time) string {
		if t.IsZero() {
			return "?"
		}
		return "+" + fmtS(t.Sub(res.StopBegan))
	}
	var first durations
	for _, p := range res.Pods {
		first = append(first, p.First.RequestReceived.Sub(res.StopBegan))
	}
	detail("restart: SIGTERM to kube-apiserver at t=0; it had exited at %s; the new one accepted TCP connections from %s, completed TLS handshakes from %s and answered /readyz at %s. %d proa were watching; the new server received their first watches at +%s–+%s (connections made while it was starting wait in its listen backlog and are served together), their last ones at +%s–+%s; %d failed attempts in all (%.1f per proa, from proa's logs)",
		at(res.Stopped), at(res.Listening), at(res.Serving), at(res.Ready), n,
		fmtS(first.min()), fmtS(first.max()), fmtS(reconnect.min()+res.Stopped.Sub(res.StopBegan)), fmtS(reconnect.max()+res.Stopped.Sub(res.StopBegan)),
		failures, float64(failures)/float64(max(n, 1)))
	var per []string
	for _, p := range res.Pods {
		s := fmt.Sprintf("%s %s", p.Name, fmtS(p.Settled.RequestReceived.Sub(res.StopBegan)))
		if len(p.Failures) > 0 {
			s += " (after " + strings.Join(p.Failures, ", ") + ")"
		}
		per = append(per, s)
	}
	detail("restart, arrival of each proa's last watch (the one that stayed open), from t=0, and the failed attempts before it: %s", strings.Join(per, "; "))
	show := res.Pods
	if !verbose && len(show) > 1 {
		show = show[:1]
	}
	for _, p := range show {
		detail("restart, %s's own log from t=0 until its last watch:\n%s", p.Name, strings.Join(p.Attempts, "\n"))
		detail("restart, %s's requests from t=0 (audit log):\n%s", p.Name, strings.TrimRight(describeRequests(p.During, res.StopBegan), "\n"))
	}
}

func serverRows(rep *report, s serverCost, detail func(string, ...any)) {
	heap := s.per(func(m serverMetrics) float64 { return m.HeapLive })
	stack := s.per(func(m serverMetrics) float64 { return m.StackInuse })
	rss := s.per(func(m serverMetrics) float64 { return m.RSS })
	gor := s.per(func(m serverMetrics) float64 { return m.Goroutines })
	cpu := s.OpenCPU / float64(s.N)
	rep.Rows = append(rep.Rows, row{
		Figure: "API server memory per open proa watch",
		Value: fmt.Sprintf("%.1f KiB (%.1f KiB live heap + %.1f KiB goroutine stacks; %.1f goroutines); RSS %+.1f KiB (%d watches)",
			(heap+stack)/1024, heap/1024, stack/1024, gor, rss/1024, s.N),
		Target: "(for the estimate below)",
		Numbers: map[string]float64{"kib": round1((heap + stack) / 1024), "heap_live_kib": round1(heap / 1024),
			"stack_kib": round1(stack / 1024), "rss_kib": round1(rss / 1024), "goroutines": round1(gor), "watches": float64(s.N)},
	})
	rep.Rows = append(rep.Rows, row{
		Figure:  "API server CPU to open one proa watch",
		Value:   fmt.Sprintf("%.2f ms (new TLS connection, token and RBAC checks, first event; %d opened in %s, 32 at a time)", cpu*1000, s.N, fmtS(s.OpenTook)),
		Target:  "(for the estimate below)",
		Numbers: map[string]float64{"cpu_ms": round2(cpu * 1000), "open_s": round2(s.OpenTook.Seconds())},
	})
	detail("API server /metrics after a GC: before %s live heap, %s stacks, %s RSS, %.0f goroutines, %.0f pod watches; with %d more watches open %s, %s, %s, %.0f, %.0f; after closing them %s, %s, %s, %.0f, %.0f; idle CPU %.1f ms/s (subtracted from the cost of opening)",
		fmtMiB(int64(s.Before.HeapLive)), fmtMiB(int64(s.Before.StackInuse)), fmtMiB(int64(s.Before.RSS)), s.Before.Goroutines, s.Before.PodWatches,
		s.N, fmtMiB(int64(s.Open.HeapLive)), fmtMiB(int64(s.Open.StackInuse)), fmtMiB(int64(s.Open.RSS)), s.Open.Goroutines, s.Open.PodWatches,
		fmtMiB(int64(s.End.HeapLive)), fmtMiB(int64(s.End.StackInuse)), fmtMiB(int64(s.End.RSS)), s.End.Goroutines, s.End.PodWatches, s.IdleCPURate*1000)
}

func secs(d time.Duration) string { return fmt.Sprintf("%g s", d.Seconds()) }

func round1(f float64) float64 { return float64(int64(f*10+0.5)) / 10 }
func round2(f float64) float64 { return float64(int64(f*100+0.5)) / 100 }

// latencyRow is a table row for a sample of latencies: median and p95.
func latencyRow(figure, target string, d durations, note string, pass bool) row {
	return row{
		Figure: figure,
		Value:  fmt.Sprintf("median %s, p95 %s (%s)", fmtMS(d.median()), fmtMS(d.pct(95)), note),
		Target: target,
		Result: passIf(pass),
		Numbers: map[string]float64{"median_ms": msf(d.median()), "p95_ms": msf(d.pct(95)),
			"min_ms": msf(d.min()), "max_ms": msf(d.max())},
	}
}
