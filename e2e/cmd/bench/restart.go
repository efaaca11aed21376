package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"strings"
	"time"

	"proa/e2e/cluster"
	"proa/e2e/harness"
	"proa/e2e/kubelet"
)

// restartPod is what one proa did across the API server's restart.
type restartPod struct {
	Name string
	// Requests are every request by the Pod's service account, its whole
	// life; During those received from the stop on.
	Requests, During []cluster.AuditEvent
	// First is the first watch the new server answered; Settled the last
	// watch request, the one that was open when proa finished. Reconnect is
	// Settled's arrival after the old server was gone.
	First, Settled cluster.AuditEvent
	Reconnect      time.Duration
	// Attempts are proa's log lines about the watch from the stop until
	// Settled ("watch ended, resuming", "watch failed, retrying").
	Attempts []string
	Failures []string // the "watch failed, retrying" errors in that time, in short
	ExitCode int
}

type restartResult struct {
	Pods                      []restartPod
	StopBegan, Stopped, Ready time.Time
	// When the new server's port first accepted a TCP connection, and when
	// it first completed a TLS handshake (zero if not seen).
	Listening, Serving time.Time
}

// runRestart starts n Pods whose sidecar is not ready, restarts
// kube-apiserver while every proa waits, waits until each proa watches
// again, then lets them finish (the sidecar becomes ready, the command runs,
// the shutdown completes) and reads the audit log.
func runRestart(ctx context.Context, env *harness.Env, n int, stamp string, log func(string, ...any)) (restartResult, error) {
	var res restartResult
	pods := make([]*kubelet.Pod, 0, n)
	defer func() {
		for _, p := range pods {
			p.Close()
		}
	}()
	for i := range n {
		// Debug level: proa logs each clean end of a stream and resumption.
		p, err := env.Kubelet.Run(ctx, benchPod(fmt.Sprintf("restart-%02d", i+1), stamp, "--log-level", "debug"))
		if err != nil {
			return res, err
		}
		pods = append(pods, p)
	}
	res.Pods = make([]restartPod, n)
	for i, p := range pods {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := p.WaitEvent(wctx, "proa", "waiting for sidecars")
		cancel()
		if err != nil {
			return res, fmt.Errorf("pod %s: %w", p.Name, err)
		}
		res.Pods[i].Name = p.Name
	}
	time.Sleep(2 * time.Second) // every watch open and idle

	log("restarting kube-apiserver with %d proa watches open", n)
	res.StopBegan = time.Now()
	if err := env.Cluster.StopAPIServer(); err != nil {
		return res, err
	}
	res.Stopped = time.Now()
	pctx, stopProbe := context.WithCancel(ctx)
	probed := make(chan struct{})
	go func() {
		defer close(probed)
		res.Listening, res.Serving = probePort(pctx, env.Cluster)
	}()
	err := env.Cluster.StartAPIServer(ctx)
	res.Ready = time.Now()
	stopProbe()
	<-probed
	if err != nil {
		return res, err
	}
	log("kube-apiserver stopped in %s, ready again %s later", fmtS(res.Stopped.Sub(res.StopBegan)), fmtS(res.Ready.Sub(res.Stopped)))

	users := make([]string, n)
	for i, p := range pods {
		users[i] = cluster.ServiceAccountUser(p.Namespace, p.Spec.ServiceAccount)
	}
	// Wait until every proa has had a watch answered by the new server,
	// then a few seconds more for any retry that follows.
	deadline := time.Now().Add(2 * time.Minute)
	for i := 0; i < len(pods); {
		reqs, err := env.Cluster.AuditRequests(users[i])
		if err != nil {
			return res, err
		}
		if watchesAfter(reqs, res.Stopped) > 0 {
			i++
			continue
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("pod %s: proa did not watch again within 2 minutes of the restart", pods[i].Name)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(5 * time.Second)

	// Let every Pod finish, which shows the resumed watch works.
	for _, p := range pods {
		if err := p.SetReady(ctx, "envoy", true); err != nil {
			return res, fmt.Errorf("pod %s: %w", p.Name, err)
		}
	}
	for i, p := range pods {
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		ex, err := p.WaitProaExit(wctx)
		cancel()
		if err != nil {
			return res, fmt.Errorf("pod %s: %w\n%s", p.Name, err, indent(kubelet.Timeline(p.Events(), p.Created)))
		}
		res.Pods[i].ExitCode = ex.Code
	}
	time.Sleep(200 * time.Millisecond)
	for i, p := range pods {
		rp := &res.Pods[i]
		reqs, err := env.Cluster.AuditRequests(users[i])
		if err != nil {
			return res, err
		}
		rp.Requests = reqs
		for _, r := range reqs {
			if !r.RequestReceived.Before(res.StopBegan) {
				rp.During = append(rp.During, r)
			}
			if r.Verb == "watch" && r.RequestReceived.After(res.Stopped) {
				if rp.First.AuditID == "" {
					rp.First = r
				}
				rp.Settled = r
			}
		}
		rp.Reconnect = rp.Settled.RequestReceived.Sub(res.Stopped)
		for _, l := range p.ProaLogs("") {
			if l.Time.Before(res.StopBegan) || l.Time.After(rp.Settled.RequestReceived) {
				continue
			}
			switch l.Msg {
			case "watch failed, retrying":
				rp.Failures = append(rp.Failures, shortErr(fmt.Sprint(l.Attrs["err"])))
				rp.Attempts = append(rp.Attempts, fmt.Sprintf("%+.3fs %s: %v (retry in %v)",
					l.Time.Sub(res.StopBegan).Seconds(), l.Msg, l.Attrs["err"], l.Attrs["retry_in"]))
			case "watch ended, resuming":
				rp.Attempts = append(rp.Attempts, fmt.Sprintf("%+.3fs %s (resource_version %v)",
					l.Time.Sub(res.StopBegan).Seconds(), l.Msg, l.Attrs["resource_version"]))
			}
		}
	}
	return res, nil
}

// watchesAfter counts the successful watches received after t.
func watchesAfter(reqs []cluster.AuditEvent, t time.Time) int {
	n := 0
	for _, r := range reqs {
		if r.Verb == "watch" && r.ResponseStatus.Code == 200 && r.RequestReceived.After(t) {
			n++
		}
	}
	return n
}

// codes summarises requests as "watch 200 ×1, watch 429 ×2".
func codes(reqs []cluster.AuditEvent) string {
	type key struct {
		verb string
		code int
	}
	var order []key
	n := map[key]int{}
	for _, r := range reqs {
		k := key{r.Verb, r.ResponseStatus.Code}
		if n[k] == 0 {
			order = append(order, k)
		}
		n[k]++
	}
	var parts []string
	for _, k := range order {
		parts = append(parts, fmt.Sprintf("%s %d ×%d", strings.ToUpper(k.verb), k.code, n[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// shortErr names a watch error by its kind.
func shortErr(err string) string {
	for _, k := range []struct{ sub, name string }{
		{"410", "410 Expired"}, {"429", "429"}, {"connection refused", "connection refused"},
		{"connection reset", "connection reset"}, {"EOF", "EOF"}, {"503", "503"}, {"500", "500"},
		{"timeout", "timeout"},
	} {
		if strings.Contains(err, k.sub) {
			return k.name
		}
	}
	if len(err) > 60 {
		err = err[:60] + "…"
	}
	return err
}

// probePort tries, every 10 ms, a TCP connection and a TLS handshake to the
// API server's port, and returns when each first succeeded.
func probePort(ctx context.Context, c *cluster.Cluster) (listening, serving time.Time) {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.CAPEM)
	addr := net.JoinHostPort(c.Host, fmt.Sprint(c.Port))
	for ctx.Err() == nil && serving.IsZero() {
		d := &net.Dialer{Timeout: 20 * time.Millisecond}
		if listening.IsZero() {
			if conn, err := d.DialContext(ctx, "tcp", addr); err == nil {
				listening = time.Now()
				conn.Close()
			}
		}
		if !listening.IsZero() {
			tctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
			conn, err := (&tls.Dialer{NetDialer: d, Config: &tls.Config{RootCAs: pool}}).DialContext(tctx, "tcp", addr)
			cancel()
			if err == nil {
				serving = time.Now()
				conn.Close()
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return listening, serving
}
