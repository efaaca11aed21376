package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// sidecarMain serves HTTP as a sidecar does. The environment shapes it:
//
//	SIDECAR_ADDR             listen address (default :8080)
//	SIDECAR_READY_PATH       readiness endpoint (default /ready): 503, then
//	                         200 from SIDECAR_READY_AFTER on (a duration, or
//	                         seconds read from the variable named by
//	                         SIDECAR_READY_AFTER_FROM, e.g. STARTUP_DELAY)
//	SIDECAR_QUIT             "METHOD PATH" pairs, comma-separated, that make
//	                         it exit (default GET and POST of /quitquitquit
//	                         and /quit), after SIDECAR_QUIT_DELAY with
//	                         SIDECAR_QUIT_CODE
//	SIDECAR_TERM             what SIGTERM/SIGINT does: exit (default) or
//	                         ignore; it exits SIDECAR_TERM_DELAY after the
//	                         first one with SIDECAR_TERM_CODE
//
// GET / answers "hello from the sidecar". Every request to a quit endpoint
// and every signal is an event.
func sidecarMain(role string) {
	src := role
	if n := os.Getenv("SIDECAR_NAME"); n != "" {
		src = n
	}
	addr := os.Getenv("SIDECAR_ADDR")
	if addr == "" {
		addr = ":8080"
	}
	readyPath := os.Getenv("SIDECAR_READY_PATH")
	if readyPath == "" {
		readyPath = "/ready"
	}
	readyAfter := envDuration("SIDECAR_READY_AFTER")
	if from := os.Getenv("SIDECAR_READY_AFTER_FROM"); from != "" {
		readyAfter = envDuration(from)
	}
	quit := os.Getenv("SIDECAR_QUIT")
	if quit == "" {
		quit = "GET /quitquitquit,POST /quitquitquit,GET /quit,POST /quit"
	}
	quitEndpoints := strings.Split(quit, ",")
	quitDelay, quitCode := envDuration("SIDECAR_QUIT_DELAY"), envInt("SIDECAR_QUIT_CODE", 0)
	termDelay, termCode := envDuration("SIDECAR_TERM_DELAY"), envInt("SIDECAR_TERM_CODE", 0)
	ignoreTerm := os.Getenv("SIDECAR_TERM") == "ignore"

	start := time.Now()
	var once sync.Once
	var readyOnce sync.Once
	exit := func(code int, why string) {
		event(src, "exiting", "code", code, "why", why)
		os.Exit(code)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if slices.Contains(quitEndpoints, r.Method+" "+r.URL.Path) {
			event(src, "quit requested", "method", r.Method, "path", r.URL.Path, "user_agent", r.UserAgent())
			fmt.Fprintln(w, "bye")
			w.(http.Flusher).Flush()
			once.Do(func() {
				go func() {
					time.Sleep(quitDelay) // a sidecar slow to quit, not synchronisation
					exit(quitCode, "quit")
				}()
			})
			return
		}
		switch r.URL.Path {
		case readyPath:
			if time.Since(start) < readyAfter {
				http.Error(w, "not ready", http.StatusServiceUnavailable)
				return
			}
			readyOnce.Do(func() { event(src, "ready", "after", time.Since(start).String()) })
			fmt.Fprintln(w, "ok")
		case "/":
			fmt.Fprintln(w, "hello from the sidecar")
		default:
			http.NotFound(w, r)
		}
	})
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		first := true
		for s := range sigs {
			event(src, "signal", "signal", s.String(), "ignored", ignoreTerm)
			if first && !ignoreTerm {
				first = false
				time.AfterFunc(termDelay, func() { exit(termCode, "signal "+s.String()) })
			}
		}
	}()
	srv := &http.Server{Addr: addr, Handler: mux}
	event(src, "started", "addr", addr, "pid", os.Getpid(), "uid", os.Getuid(), "ready_after", readyAfter.String())
	err := srv.ListenAndServe()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	srv.Shutdown(ctx)
	event(src, "serve failed", "err", err.Error())
	os.Exit(1)
}
