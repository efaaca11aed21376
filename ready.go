package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// conditions are the --wait-http and --wait-tcp checks. Each is polled with
// backoff until it holds once.
type conditions struct {
	mu      sync.Mutex
	pending map[string]string // condition → its last error
	changed chan struct{}
}

func startConditions(ctx context.Context, c *config) *conditions {
	cs := &conditions{pending: map[string]string{}, changed: make(chan struct{})}
	client := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone(), Timeout: 2 * time.Second}
	checks := map[string]func(context.Context) error{}
	start := func(desc string, check func(context.Context) error) {
		cs.pending[desc] = "checking"
		checks[desc] = check
	}
	for _, u := range c.waitHTTP {
		start("GET "+redact(u), func(ctx context.Context) error {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
			if err != nil {
				return err
			}
			req.Header.Set("User-Agent", "proa/"+proaVersion())
			resp, err := client.Do(req)
			if err != nil {
				return withoutURL(err) // the condition names it
			}
			resp.Body.Close()
			if resp.StatusCode/100 != 2 {
				return errors.New(resp.Status)
			}
			return nil
		})
	}
	for _, addr := range c.waitTCP {
		start("TCP "+addr, func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			conn, err := new(net.Dialer).DialContext(ctx, "tcp", addr)
			if err == nil {
				conn.Close()
			}
			return err
		})
	}
	for desc, check := range checks {
		go cs.poll(ctx, desc, check)
	}
	return cs
}

func (cs *conditions) poll(ctx context.Context, desc string, check func(context.Context) error) {
	delay := 50 * time.Millisecond
	for {
		err := check(ctx)
		cs.mu.Lock()
		if err == nil {
			delete(cs.pending, desc)
		} else {
			cs.pending[desc] = err.Error()
		}
		close(cs.changed)
		cs.changed = make(chan struct{})
		cs.mu.Unlock()
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, time.Second)
	}
}

// current lists the conditions that have not held yet, with their last
// errors, and a channel closed at the next change.
func (cs *conditions) current() ([]string, <-chan struct{}) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	var out []string
	for desc, err := range cs.pending {
		out = append(out, fmt.Sprintf("%s: %s", desc, err))
	}
	slices.Sort(out)
	return out, cs.changed
}

// readyServer answers the main container's probes: GET /ready is 200 while
// the command runs and 503 before and after, GET /live is always 200. A
// probe is one short HTTP/1.x request, so a tiny responder does; it keeps
// net/http's server (and its HTTP/2 server) out of the binary.
type readyServer struct {
	l       net.Listener
	running atomic.Bool
}

func serveReady(addr string, log *slog.Logger) (*readyServer, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--ready-addr: %w", err)
	}
	rs := &readyServer{l: l}
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go rs.answer(conn)
		}
	}()
	log.Info("serving readiness", "addr", l.Addr().String())
	return rs, nil
}

func (rs *readyServer) answer(conn net.Conn) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReaderSize(conn, 4096)
	line, err := br.ReadSlice('\n')
	if err != nil {
		return
	}
	for { // skip the headers
		h, err := br.ReadSlice('\n')
		if err != nil {
			return
		}
		if len(bytes.TrimSpace(h)) == 0 {
			break
		}
	}
	method, target, _ := strings.Cut(strings.TrimSpace(string(line)), " ")
	path, _, _ := strings.Cut(target, " ") // drop the protocol version
	path, _, _ = strings.Cut(path, "?")
	code, body := 404, "not found"
	switch {
	case method != "GET" && method != "HEAD":
		code, body = 405, "method not allowed"
	case path == "/live":
		code, body = 200, "ok"
	case path == "/ready" && rs.running.Load():
		code, body = 200, "ok: the command is running"
	case path == "/ready":
		code, body = 503, "not ready: the command is not running"
	}
	body += "\n"
	head := fmt.Sprintf("HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n",
		code, http.StatusText(code), len(body))
	if method == "HEAD" {
		body = ""
	}
	io.WriteString(conn, head+body)
}

func (rs *readyServer) setRunning(v bool) {
	if rs != nil {
		rs.running.Store(v)
	}
}

func (rs *readyServer) close() {
	if rs != nil {
		rs.l.Close()
	}
}

// progressEvery is how often proa says what it still waits for; a variable
// for tests.
var progressEvery = 15 * time.Second

// waitReady waits until every sidecar is ready and every --wait-* condition
// has held. It returns ok when the command should run; otherwise code says
// why not. self is proa's own container, once known.
func waitReady(ctx context.Context, c *config, w *podWatcher, conds *conditions, sigs <-chan os.Signal, log *slog.Logger) (code int, self string, ok bool) {
	start := time.Now()
	var timeout <-chan time.Time
	if c.timeout > 0 {
		t := time.NewTimer(c.timeout)
		defer t.Stop()
		timeout = t.C
	}
	progress := time.NewTicker(progressEvery)
	defer progress.Stop()
	var sidecars []sidecar
	logged := false
	for {
		var notReady []string
		var podChanged <-chan struct{}
		var watchErr error
		waitingForPod := false
		if w != nil {
			var st podState
			st, podChanged = w.current()
			watchErr = st.lastErr
			if st.gone != nil {
				log.Error("sidecars never became ready", "err", st.gone)
				return exitUnavailable, self, false
			}
			if st.pod == nil {
				notReady, waitingForPod = []string{"pod state not received yet"}, true
			} else {
				if self == "" {
					var err error
					if self, err = chooseContainers(c, st.pod, log); err != nil {
						log.Error("sidecars never became ready", "err", err)
						return exitUnavailable, "", false
					}
				}
				var failed string
				sidecars, _ = splitContainers(st.pod, self, c.sidecars)
				if notReady, failed = readiness(st.pod, sidecars); failed != "" {
					log.Error("sidecars never became ready", "err", failed)
					return exitUnavailable, self, false
				}
			}
		}
		pending, condChanged := conds.current()
		notReady = append(notReady, pending...)
		if len(notReady) == 0 {
			log.Info("sidecars ready", "elapsed", since(start), "sidecars", names(sidecars, func(s sidecar) string { return s.name }),
				"conditions", len(c.waitHTTP)+len(c.waitTCP))
			return 0, self, true
		}
		// The first line waits for the Pod's state, which usually comes at
		// once; the progress lines say if it does not.
		if !logged && !waitingForPod {
			log.Info("waiting for sidecars", "not_ready", notReady)
			logged = true
		}
		select {
		case <-podChanged:
		case <-condChanged:
		case <-progress.C:
			args := []any{"not_ready", notReady, "elapsed", since(start)}
			if watchErr != nil {
				args = append(args, "watch_error", watchErr.Error())
			}
			log.Info("waiting for sidecars", args...)
		case <-ctx.Done():
			log.Error("sidecars never became ready", "err", context.Cause(ctx))
			return exitUnavailable, self, false
		case <-timeout:
			log.Error("sidecars never became ready", "err", fmt.Sprintf("not ready within --timeout %s", c.timeout), "not_ready", notReady)
			return exitUnavailable, self, false
		case sig := <-sigs:
			if sig == syscall.SIGTERM || sig == syscall.SIGINT {
				log.Warn("stopped by a signal before the command started", "signal", signalName(sig))
				return signalCode(sig), self, false
			}
			log.Debug("ignoring signal while waiting", "signal", signalName(sig))
		}
	}
}

// chooseContainers settles, from the first Pod state, which container is
// proa's own, and checks --sidecar against the Pod.
func chooseContainers(c *config, p *pod, log *slog.Logger) (self string, err error) {
	mountinfo, _ := os.ReadFile(c.mountinfo)
	self, rule, err := ownContainer(p, c, string(mountinfo))
	if err != nil {
		return "", err
	}
	if err := checkSidecarNames(p, self, c.sidecars); err != nil {
		return "", err
	}
	sidecars, peers := splitContainers(p, self, c.sidecars)
	log.Info("own container", "name", self, "rule", rule, "peers", names(peers, func(s sidecar) string { return s.name }))
	warnSetup(c, p, self, rule, sidecars, log)
	return self, nil
}

// warnSetup warns, once at start, about a setup that cannot work as the
// user expects (SPEC §7).
func warnSetup(c *config, p *pod, self, rule string, sidecars []sidecar, log *slog.Logger) {
	if rule == "first container" && len(p.Spec.Containers) > 1 {
		log.Warn("taking the first container as proa's own: set PROA_CONTAINER_NAME if it is not", "container", self)
	}
	var regular []string
	for _, s := range sidecars {
		if !s.native {
			regular = append(regular, s.name)
		}
	}
	// Under restartPolicy Always the Pod never completes anyway (shutdown
	// leaves the sidecars running): nothing to warn about.
	if len(regular) > 0 && !c.canStopSidecars() && willNotRestart(ownRestartPolicy(p, self), 0) {
		log.Warn("no -g, -p, -k or -K: nothing will stop the sidecars, so the Pod completes only if they exit by themselves", "sidecars", regular)
	}
}
