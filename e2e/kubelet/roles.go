package kubelet

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The harness binary re-executes itself in one of these roles, chosen by
// the environment variable PROA_E2E_ROLE.
const (
	envRole    = "PROA_E2E_ROLE"
	envSidecar = "PROA_E2E_SIDECAR"
	envPodInit = "PROA_E2E_PODINIT"
	envEvents  = "PROA_E2E_EVENTS"
	envAppName = "PROA_E2E_CONTAINER"
	envProxyTo = "PROA_E2E_PROXY_TO" // a ProxyAPI sidecar's upstream, the API server
)

// maxLifetime bounds every helper process, in case nothing else stops it.
const maxLifetime = 15 * time.Minute

// RunRoleIfRequested must be called first thing in TestMain or main: when
// this process was started as a sidecar, the test application or proa's
// container setup, it does that and exits; otherwise it returns.
func RunRoleIfRequested() {
	role := os.Getenv(envRole)
	switch role {
	case "":
		return
	case "sidecar":
		sidecarMain()
	case "app":
		appMain(os.Args[1:])
	case "podinit":
		podInitMain()
	case "pause":
		pauseMain()
	case "enter":
		enterMain()
	default:
		fmt.Fprintf(os.Stderr, "proa-e2e: unknown role %q\n", role)
		os.Exit(2)
	}
	os.Exit(0)
}

// emitter appends events to the Pod's events file.
type emitter struct {
	src string
	mu  sync.Mutex
	f   *os.File
}

func newEmitter(src string) *emitter {
	e := &emitter{src: src}
	if path := os.Getenv(envEvents); path != "" {
		e.f, _ = os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	}
	return e
}

func (e *emitter) emit(msg string, fields map[string]any) {
	ev := Event{Time: time.Now(), Source: e.src, Msg: msg, Fields: fields}
	b, _ := json.Marshal(ev)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.f != nil {
		e.f.Write(append(b, '\n'))
	}
}

// orphanWatch exits the process when its parent is gone or after
// maxLifetime, so no helper outlives the harness.
func orphanWatch(e *emitter) {
	ppid := os.Getppid()
	start := time.Now()
	go func() {
		for range time.Tick(200 * time.Millisecond) {
			if os.Getppid() != ppid || time.Since(start) > maxLifetime {
				e.emit("parent gone or lifetime exceeded: exiting", nil)
				os.Exit(125)
			}
		}
	}()
}

type sidecarConfig struct {
	Name string
	Sidecar
}

func sidecarMain() {
	var cfg sidecarConfig
	if err := json.Unmarshal([]byte(os.Getenv(envSidecar)), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "sidecar: bad config:", err)
		os.Exit(2)
	}
	e := newEmitter(cfg.Name)
	say := func(msg string, fields map[string]any) {
		e.emit(msg, fields)
		fmt.Println(Event{Msg: msg, Fields: fields})
	}
	orphanWatch(e)
	l, err := net.FileListener(os.NewFile(3, "listener"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "sidecar: no listener on fd 3:", err)
		os.Exit(2)
	}
	if to := os.Getenv(envProxyTo); to != "" {
		pl, err := net.FileListener(os.NewFile(4, "proxy"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "sidecar: no proxy listener on fd 4:", err)
			os.Exit(2)
		}
		go proxyTCP(pl, to)
	}
	start := time.Now()
	var mu sync.Mutex
	var forced *bool
	wasReady := false
	isReady := func() bool {
		mu.Lock()
		defer mu.Unlock()
		if forced != nil {
			return *forced
		}
		return !cfg.NeverReady && time.Since(start) >= cfg.ReadyAfter
	}
	exit := func(code int, why string) {
		say("exiting", map[string]any{"code": code, "why": why})
		os.Exit(code)
	}
	srv := &http.Server{}
	mux := http.NewServeMux()
	mux.HandleFunc("/ready", func(w http.ResponseWriter, r *http.Request) {
		ok := isReady()
		mu.Lock()
		changed := ok != wasReady
		wasReady = ok
		mu.Unlock()
		if changed {
			say(map[bool]string{true: "ready: probe answered 200", false: "not ready: probe answered 503"}[ok], nil)
		}
		if !ok {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("/live", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	var quitOnce sync.Once
	mux.HandleFunc("/quit", func(w http.ResponseWriter, r *http.Request) {
		say("quit requested", map[string]any{"method": r.Method, "user_agent": r.UserAgent()})
		fmt.Fprintln(w, "bye")
		w.(http.Flusher).Flush()
		quitOnce.Do(func() {
			go func() {
				time.Sleep(cfg.QuitDelay) // simulated drain time, not synchronisation
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				srv.Shutdown(ctx)
				cancel()
				exit(cfg.QuitCode, "quit")
			}()
		})
	})
	mux.HandleFunc("/control", func(w http.ResponseWriter, r *http.Request) {
		v, err := strconv.ParseBool(r.URL.Query().Get("ready"))
		if r.Method != "POST" || err != nil {
			http.Error(w, "POST /control?ready=true|false", http.StatusBadRequest)
			return
		}
		mu.Lock()
		forced = &v
		mu.Unlock()
		say("readiness set by the test", map[string]any{"ready": v})
	})
	srv.Handler = mux
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		s := <-sigs
		say("signal", map[string]any{"signal": s.String()})
		time.AfterFunc(cfg.TermDelay, func() { exit(cfg.TermCode, "signal "+s.String()) })
		for s := range sigs {
			say("signal", map[string]any{"signal": s.String()})
		}
	}()
	if cfg.ExitAfter > 0 {
		time.AfterFunc(cfg.ExitAfter, func() { exit(cfg.ExitCode, "exit-after") })
	}
	say("started", map[string]any{"addr": l.Addr().String(), "pid": os.Getpid()})
	srv.Serve(l)
	select {} // Serve returns on Shutdown; the quit goroutine exits
}

// proxyTCP forwards every connection l accepts to the address to, until the
// process exits, which ends them all at once (as a mesh proxy's exit does).
func proxyTCP(l net.Listener, to string) {
	for {
		in, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer in.Close()
			out, err := net.DialTimeout("tcp", to, 5*time.Second)
			if err != nil {
				return
			}
			defer out.Close()
			done := make(chan struct{}, 2)
			go func() { io.Copy(out, in); done <- struct{}{} }()
			go func() { io.Copy(in, out); done <- struct{}{} }()
			<-done
		}()
	}
}

var signalNames = map[string]syscall.Signal{"KILL": syscall.SIGKILL, "TERM": syscall.SIGTERM,
	"INT": syscall.SIGINT, "HUP": syscall.SIGHUP, "QUIT": syscall.SIGQUIT,
	"USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2, "WINCH": syscall.SIGWINCH}

func parseSignal(s string) (syscall.Signal, error) {
	if sig, ok := signalNames[strings.TrimPrefix(strings.ToUpper(s), "SIG")]; ok {
		return sig, nil
	}
	n, err := strconv.Atoi(s)
	return syscall.Signal(n), err
}

// listProcesses maps each PID visible in /proc to its executable's base name.
func listProcesses() map[string]string {
	out := map[string]string{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		exe, err := os.Readlink("/proc/" + e.Name() + "/exe")
		if err != nil {
			exe = "?"
		}
		out[e.Name()] = filepath.Base(exe)
	}
	return out
}

// appMain is the test application proa runs; see App for the actions.
func appMain(args []string) {
	e := newEmitter("app")
	if c := os.Getenv(envAppName); c != "" {
		e.src = c + "/app"
	}
	say := func(msg string, fields map[string]any) {
		e.emit(msg, fields)
		fmt.Fprintln(os.Stderr, Event{Msg: msg, Fields: fields})
	}
	fail := func(format string, a ...any) {
		say("bad arguments: "+fmt.Sprintf(format, a...), nil)
		os.Exit(2)
	}
	orphanWatch(e)
	say("started", map[string]any{"argv": args, "pid": os.Getpid()})
	exit := func(code int) {
		say("exiting", map[string]any{"code": code})
		os.Exit(code)
	}
	traps := map[os.Signal]int{}
	sigs := make(chan os.Signal, 4)
	for i := 0; i < len(args); i++ {
		arg := func() string {
			if i+1 >= len(args) {
				fail("%s needs an argument", args[i])
			}
			i++
			return args[i]
		}
		switch a := args[i]; a {
		case "print":
			fmt.Println(arg())
		case "sleep":
			d, err := time.ParseDuration(arg())
			if err != nil {
				fail("%v", err)
			}
			select {
			case <-time.After(d):
			case s := <-sigs:
				say("signal", map[string]any{"signal": s.String()})
				exit(traps[s])
			}
		case "exit":
			n, err := strconv.Atoi(arg())
			if err != nil {
				fail("%v", err)
			}
			exit(n)
		case "kill":
			sig, err := parseSignal(arg())
			if err != nil {
				fail("%v", err)
			}
			say("sending itself a signal", map[string]any{"signal": sig.String()})
			syscall.Kill(os.Getpid(), sig)
			time.Sleep(time.Minute) // a signal without a handler ends the process
		case "trap":
			sig, err := parseSignal(arg())
			if err != nil {
				fail("%v", err)
			}
			n, err := strconv.Atoi(arg())
			if err != nil {
				fail("%v", err)
			}
			traps[sig] = n
			signal.Notify(sigs, sig)
		case "fail-once":
			path, code := arg(), arg()
			n, err := strconv.Atoi(code)
			if err != nil {
				fail("%v", err)
			}
			if _, err := os.Stat(path); err != nil {
				os.WriteFile(path, nil, 0o644)
				exit(n)
			}
		case "ps":
			say("ps", map[string]any{"processes": listProcesses()})
		case "wait-file":
			path := arg()
			for {
				if _, err := os.Stat(path); err == nil {
					break
				}
				select {
				case <-time.After(20 * time.Millisecond):
				case s := <-sigs:
					say("signal", map[string]any{"signal": s.String()})
					exit(traps[s])
				}
			}
		default:
			fail("unknown action %q", a)
		}
	}
	exit(0)
}
