package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// sidecar is what an HTTP sidecar serves and how it stops. The sidecar
// role takes it from the environment (sidecarFromEnv); the stand-ins of
// real sidecars build it from their command lines.
type sidecar struct {
	name       string
	addr       string        // the HTTP server: readiness, okPaths, "/" ("": none)
	readyPath  string        // 503, then 200 from readyAfter on
	readyAfter time.Duration // after the start
	okPaths    []string      // 200 at once (start-up and liveness endpoints)
	quit       []string      // "METHOD PATH": answered, then it exits
	quitAddr   string        // a server of its own for quit ("": on addr)
	quitFrom   string        // the only client address quit obeys ("": any); others get 403
	quitDelay  time.Duration // from the quit request to the exit
	quitCode   int
	termIgnore bool          // SIGTERM/SIGINT recorded, nothing else
	termDelay  time.Duration // from the first SIGTERM/SIGINT to the exit
	termCode   int
	listen     []string // more addresses that accept connections and close them
	beforeExit func()   // e.g. a log shipper's last flush
}

// sidecarFromEnv reads the sidecar role's environment:
//
//	SIDECAR_ADDR             listen address (default :8080)
//	SIDECAR_READY_PATH       readiness endpoint (default /ready): 503, then
//	                         200 from SIDECAR_READY_AFTER on (a duration, or
//	                         seconds read from the variable named by
//	                         SIDECAR_READY_AFTER_FROM when it is set, e.g.
//	                         WARMUP_SECONDS)
//	SIDECAR_OK_PATHS         comma-separated paths answering 200 at once
//	                         (e.g. a startupProbe's)
//	SIDECAR_QUIT             "METHOD PATH" pairs, comma-separated, that make
//	                         it exit (default GET and POST of /quitquitquit
//	                         and /quit), after SIDECAR_QUIT_DELAY with
//	                         SIDECAR_QUIT_CODE; SIDECAR_QUIT_FROM (e.g.
//	                         127.0.0.1) refuses them (403) from other clients
//	SIDECAR_TERM             what SIGTERM/SIGINT does: exit (default) or
//	                         ignore; it exits SIDECAR_TERM_DELAY after the
//	                         first one with SIDECAR_TERM_CODE
func sidecarFromEnv(role string) sidecar {
	s := sidecar{
		name:       role,
		addr:       envString("SIDECAR_ADDR", ":8080"),
		readyPath:  envString("SIDECAR_READY_PATH", "/ready"),
		readyAfter: envDuration("SIDECAR_READY_AFTER"),
		quit:       strings.Split(envString("SIDECAR_QUIT", "GET /quitquitquit,POST /quitquitquit,GET /quit,POST /quit"), ","),
		quitFrom:   os.Getenv("SIDECAR_QUIT_FROM"),
		quitDelay:  envDuration("SIDECAR_QUIT_DELAY"),
		quitCode:   envInt("SIDECAR_QUIT_CODE", 0),
		termIgnore: os.Getenv("SIDECAR_TERM") == "ignore",
		termDelay:  envDuration("SIDECAR_TERM_DELAY"),
		termCode:   envInt("SIDECAR_TERM_CODE", 0),
	}
	if n := os.Getenv("SIDECAR_NAME"); n != "" {
		s.name = n
	}
	if from := os.Getenv("SIDECAR_READY_AFTER_FROM"); os.Getenv(from) != "" {
		s.readyAfter = envDuration(from)
	}
	if ok := os.Getenv("SIDECAR_OK_PATHS"); ok != "" {
		s.okPaths = strings.Split(ok, ",")
	}
	return s
}

func envString(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// run serves until a quit request or a signal ends the process. GET /
// answers "hello from the sidecar". Every request to a quit endpoint and
// every signal is an event.
func (s sidecar) run() {
	start := time.Now()
	var quitOnce, readyOnce sync.Once
	exit := func(code int, why string) {
		if s.beforeExit != nil {
			s.beforeExit()
		}
		event(s.name, "exiting", "code", code, "why", why)
		os.Exit(code)
	}
	quit := func(w http.ResponseWriter, r *http.Request) bool {
		if !slices.Contains(s.quit, r.Method+" "+r.URL.Path) {
			return false
		}
		if host, _, _ := net.SplitHostPort(r.RemoteAddr); s.quitFrom != "" && host != s.quitFrom {
			event(s.name, "quit refused", "method", r.Method, "path", r.URL.Path, "from", host)
			http.Error(w, r.URL.Path+" is for "+s.quitFrom+" only", http.StatusForbidden)
			return true
		}
		event(s.name, "quit requested", "method", r.Method, "path", r.URL.Path, "user_agent", r.UserAgent())
		fmt.Fprintln(w, "bye")
		w.(http.Flusher).Flush()
		quitOnce.Do(func() {
			go func() {
				time.Sleep(s.quitDelay) // a sidecar slow to quit, not synchronisation
				exit(s.quitCode, "quit")
			}()
		})
		return true
	}
	serve := func(w http.ResponseWriter, r *http.Request) {
		if s.quitAddr == "" && quit(w, r) {
			return
		}
		switch p := r.URL.Path; {
		case p == s.readyPath:
			if time.Since(start) < s.readyAfter {
				http.Error(w, "not ready", http.StatusServiceUnavailable)
				return
			}
			readyOnce.Do(func() { event(s.name, "ready", "after", time.Since(start).String()) })
			fmt.Fprintln(w, "ok")
		case slices.Contains(s.okPaths, p):
			fmt.Fprintln(w, "ok")
		case p == "/":
			fmt.Fprintln(w, "hello from the sidecar")
		default:
			http.NotFound(w, r)
		}
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		first := true
		for sig := range sigs {
			event(s.name, "signal", "signal", sig.String(), "ignored", s.termIgnore)
			if first && !s.termIgnore {
				first = false
				time.AfterFunc(s.termDelay, func() { exit(s.termCode, "signal "+sig.String()) })
			}
		}
	}()

	failed := make(chan error, 3+len(s.listen))
	if s.addr != "" {
		go func() { failed <- http.ListenAndServe(s.addr, http.HandlerFunc(serve)) }()
	}
	if s.quitAddr != "" {
		go func() {
			failed <- http.ListenAndServe(s.quitAddr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if !quit(w, r) {
					http.NotFound(w, r)
				}
			}))
		}()
	}
	for _, addr := range s.listen {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			failed <- err
			break
		}
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					failed <- err
					return
				}
				event(s.name, "connection closed", "addr", addr, "from", c.RemoteAddr().String())
				c.Close()
			}
		}()
	}
	event(s.name, "started", "addr", s.addr, "quit_addr", s.quitAddr, "listen", s.listen,
		"pid", os.Getpid(), "uid", os.Getuid(), "ready_after", s.readyAfter.String())
	err := <-failed // with no server at all, only a signal or quit ends it
	event(s.name, "serve failed", "err", err.Error())
	os.Exit(1)
}
