// Command proa makes sidecars behave in Kubernetes. It is the entrypoint of
// a Pod's main container: it waits until every sidecar is Ready, runs the
// real program, tells the sidecars to stop, waits until they have exited, and
// exits with the program's exit code, so that a Job's Pod completes instead
// of hanging on a proxy that never stops.
//
// Usage:
//
//	proa [OPTIONS] [--] COMMAND [ARGS...]
//
// proa follows its own Pod with a single watch on the Kubernetes API
// (GET pods?watch=1&fieldSelector=metadata.name=NAME), so its service
// account needs get and watch on pods in its namespace. Sidecars are all the
// other containers of the Pod plus native sidecars (init containers with
// restartPolicy Always). Parsing stops at COMMAND: flags after it are the
// command's own.
//
// Options:
//
//	-g, --shutdown-http-get URL    GET URL at shutdown (repeatable)
//	-p, --shutdown-http-post URL   POST to URL at shutdown (repeatable)
//	-k, --kill NAME                at shutdown, signal every process whose
//	                               executable is named NAME (repeatable; Linux)
//	-K, --kill-all                 at shutdown, signal every process but PID 1,
//	                               proa and its children (Linux)
//	--kill-signal SIGNAL           signal for -k and -K: TERM (default), INT,
//	                               QUIT, KILL, ... or a number
//	--sidecar NAME                 wait only for these containers (repeatable);
//	                               other regular containers are peer main
//	                               containers, and the last of them in the Pod's
//	                               spec stops the sidecars once all have exited
//	--wait-http URL                also wait until GET URL answers 2xx (repeatable)
//	--wait-tcp HOST:PORT           also wait until HOST:PORT accepts a connection
//	                               (repeatable)
//	--ready-addr ADDR              serve GET /ready (200 while the command runs,
//	                               else 503) and GET /live on ADDR
//	--install DIR                  copy proa to DIR/proa and exit, for an
//	                               initContainer and a shared emptyDir
//	--container NAME               proa's own container (env PROA_CONTAINER_NAME);
//	                               default: detected, else the first container
//	--timeout DURATION             longest wait for readiness (env PROA_TIMEOUT);
//	                               0, the default, waits forever
//	--no-kube                      do not use the Kubernetes API, and so need no
//	                               RBAC; automatic when KUBERNETES_SERVICE_HOST
//	                               is unset
//	--shutdown-timeout DURATION    bound on the shutdown phase; default: the
//	                               Pod's terminationGracePeriodSeconds, else 30s
//	--log-level LEVEL              debug, info, warn or error (env PROA_LOG,
//	                               else RUST_LOG's level for proa)
//	--log-format FORMAT            json or text (env PROA_LOG_FORMAT); default:
//	                               text on a terminal, else json
//	-V, --version                  print the version and exit
//	-h, --help                     print this help and exit
//
// PROA_DISABLED=1 runs the command directly: no waiting and no shutdown.
// Other environment: POD_NAME and POD_NAMESPACE (downward API; defaults: the
// hostname up to its first dot, and the service account's namespace file),
// POD_UID (checked against the Pod when set), KUBERNETES_SERVICE_HOST and
// KUBERNETES_SERVICE_PORT (set by the kubelet).
//
// Exit codes: the command's own; 128+N when a signal N killed it; 127 when
// it was not found and 126 when it could not be executed; 69 when the
// sidecars never became ready (a sidecar failed for good, --timeout passed,
// the Pod does not exist, the API refused access for 30 s, or --container,
// --sidecar or --ready-addr could not be honoured); 128+N when SIGTERM or
// SIGINT stopped proa before the command started; 2 for a usage error; 1
// when --install failed. Errors during shutdown are logged and never change
// the exit code.
//
// Signals TERM, INT, HUP, QUIT, USR1, USR2 and WINCH are forwarded to the
// command, except a HUP or INT that proa's parent left ignored (nohup): it
// stays ignored. As PID 1, proa reaps every zombie. On a terminal, the
// command gets the foreground, so that Ctrl-C reaches it once, and Ctrl-Z
// stops proa with it.
//
// At shutdown proa sends the -g and -p requests and the -k and -K signals,
// then waits until every regular sidecar has exited, within the Pod's grace
// period. It leaves the sidecars running when the kubelet will restart its
// own container (restartPolicy Always, or OnFailure after a failure) and the
// Pod is not being deleted. While the Pod is being stopped (a TERM came, or
// it is being deleted) it waits only for the requests' answers, and ends a
// second before the kubelet's SIGKILL.
//
// The README has the details: readiness rules, shutdown, kill mode, RBAC,
// how proa uses the API, and what differs from the Rust proa.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"time"
)

// version is set at release time with -ldflags '-X main.version=...'.
var version = ""

func proaVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return strings.TrimPrefix(bi.Main.Version, "v")
	}
	return "0.2.0-dev"
}

const usage = `proa waits for a Pod's sidecars, runs COMMAND, then stops the sidecars.

Usage: proa [OPTIONS] [--] COMMAND [ARGS...]

Examples:
  proa -p http://127.0.0.1:15020/quitquitquit -- ./migrate --all
      wait for the Istio proxy, run ./migrate, then ask the proxy to quit
  proa -g http://localhost:9091/quitquitquit --timeout 2m -- app
      give up with exit 69 if the Cloud SQL proxy is not ready within 2m
  PROA_LOG=debug proa --log-format text -- app
      readable logs with every watch event
  proa --no-kube --wait-tcp 127.0.0.1:5432 -k pgbouncer -- ./job
      no Kubernetes API: wait for a port, then signal the sidecar's process
  proa --install /shared
      copy proa into a volume, from an initContainer

Options:
  -g, --shutdown-http-get URL   GET URL at shutdown (repeatable)
  -p, --shutdown-http-post URL  POST to URL at shutdown (repeatable)
  -k, --kill NAME               signal processes named NAME at shutdown (repeatable);
                                needs shareProcessNamespace: true
  -K, --kill-all                signal every other process in the Pod at shutdown
  --kill-signal SIGNAL          signal for -k and -K (default TERM)
  --sidecar NAME                wait only for these; other containers are main
                                containers, and the last one stops the sidecars
  --wait-http URL               also wait until GET URL answers 2xx (repeatable)
  --wait-tcp HOST:PORT          also wait until HOST:PORT accepts connections
  --ready-addr ADDR             serve /ready (200 while COMMAND runs) and /live
  --install DIR                 copy proa to DIR/proa and exit
  --container NAME              proa's own container (PROA_CONTAINER_NAME)
  --timeout DURATION            longest wait for readiness, 0 = forever (PROA_TIMEOUT)
  --no-kube                     do not use the Kubernetes API (automatic when
                                KUBERNETES_SERVICE_HOST is unset)
  --shutdown-timeout DURATION   bound on shutdown (default: the Pod's grace period)
  --log-level LEVEL             debug, info, warn, error (PROA_LOG, RUST_LOG)
  --log-format FORMAT           json or text (PROA_LOG_FORMAT; default: text
                                on a terminal, else json)
  -V, --version                 print the version
  -h, --help                    print this help

PROA_DISABLED=1 runs COMMAND directly. Exit codes: COMMAND's own, 128+N for
signal N, 127/126 when it cannot start, 69 when sidecars never became ready,
2 for a usage error, 1 when --install fails.
`

// Exit codes of proa itself; the rest come from the command.
const (
	exitUsage       = 2
	exitUnavailable = 69 // EX_UNAVAILABLE: the sidecars never became ready
	exitCannotExec  = 126
	exitNotFound    = 127
)

// newLogger logs in the chosen format; without a choice, text on a
// terminal (a developer's shell, kubectl run -it) and JSON lines elsewhere.
func newLogger(c *config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.logLevel}
	format := c.logFormat
	if f, ok := w.(*os.File); ok && format == "" && isTerminal(f) {
		format = "text"
	}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func main() {
	c, err := parseConfig(os.Args[1:], os.Getenv)
	switch {
	case errors.Is(err, errHelp):
		fmt.Print(usage)
		os.Exit(0)
	case errors.Is(err, errVersion):
		fmt.Println("proa", proaVersion())
		os.Exit(0)
	case err != nil:
		fmt.Fprintln(os.Stderr, "proa:", err)
		os.Exit(exitUsage)
	}
	log := newLogger(c, os.Stderr)
	if c.install != "" {
		path, err := install(c.install)
		if err != nil {
			log.Error("installing proa failed", "err", err)
			os.Exit(1)
		}
		log.Info("installed", "path", path, "version", proaVersion())
		os.Exit(0)
	}
	if c.disabled {
		os.Exit(execDirectly(c.command))
	}
	os.Exit(run(context.Background(), c, log))
}

// names lists container names for error messages.
func names[T any](items []T, name func(T) string) string {
	var out []string
	for _, it := range items {
		out = append(out, name(it))
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

// run does proa's work and returns its exit code.
func run(ctx context.Context, c *config, log *slog.Logger) int {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Registered before anything starts, so that no signal is lost and none
	// takes its default action (dying, for a Go program that is not PID 1).
	sigs, stopSignals := notifySignals()
	defer stopSignals()
	reaper := newReaper(os.Getpid() == 1)

	// The arguments may hold secrets (the kubelet expands $(VAR) from
	// Secrets into them): only the program's name at info.
	log.Info("starting", "version", proaVersion(), "command", c.command[0])
	log.Debug("command line", "argv", c.command)
	start := time.Now()
	code, self, ready := exitUnavailable, "", false
	var probe *readyServer
	var err error
	if c.readyAddr != "" {
		probe, err = serveReady(c.readyAddr, log)
	}
	var w *podWatcher
	if err == nil {
		w, err = startWatcher(ctx, c, log)
	}
	if err != nil {
		log.Error("sidecars never became ready", "err", err)
	} else {
		condCtx, stopConds := context.WithCancel(ctx)
		code, self, ready = waitReady(ctx, c, w, startConditions(condCtx, c), sigs.c, log)
		stopConds()
	}
	waited, ran := time.Since(start), time.Duration(0)
	if ready {
		code = runCommand(c, reaper, sigs.c, func() { probe.setRunning(true) }, log)
		probe.setRunning(false)
		ran = time.Since(start) - waited
	}
	shutdown(ctx, c, w, self, code, sigs, log)
	probe.close()
	log.Info("exiting", "code", code, "waiting", round(waited), "running", round(ran),
		"shutting_down", round(time.Since(start)-waited-ran))
	return code
}

// round is a duration for logs: milliseconds are enough.
func round(d time.Duration) string { return d.Round(time.Millisecond).String() }

// startWatcher starts following proa's own Pod. It returns nil, and no
// error, when there is no Kubernetes API to ask.
func startWatcher(ctx context.Context, c *config, log *slog.Logger) (*podWatcher, error) {
	switch {
	case c.noKube:
		log.Info("--no-kube: running without the Kubernetes API, not waiting for sidecars")
		return nil, nil
	case c.env("KUBERNETES_SERVICE_HOST") == "":
		log.Info("KUBERNETES_SERVICE_HOST is unset: running without the Kubernetes API, not waiting for sidecars")
		return nil, nil
	}
	ns, name, err := podIdentity(c.env, c.serviceAccount)
	if err != nil {
		return nil, err
	}
	client, err := newKubeClient(c.env, c.serviceAccount)
	if err != nil {
		return nil, fmt.Errorf("watching pod %s/%s: %w", ns, name, err)
	}
	w := newPodWatcher(client, ns, name, c.env("POD_UID"), log)
	log.Info("watching pod", "pod", ns+"/"+name, "api", client.base)
	go w.run(ctx)
	return w, nil
}

// install copies the running executable to dir/proa, for an initContainer
// that puts proa into an emptyDir shared with the application's container,
// and returns the copy's path. The copy is written to a temporary file and
// renamed, so that a half-copied binary is never executed; errors name dir
// and the cause, not that file.
func install(dir string) (string, error) {
	dst := filepath.Join(dir, "proa")
	fail := func(err error) (string, error) {
		var pe *fs.PathError
		var le *os.LinkError
		switch {
		case errors.As(err, &pe):
			err = pe.Err
		case errors.As(err, &le):
			err = le.Err
		}
		return "", fmt.Errorf("installing proa into %s: %w", dir, err)
	}
	self, err := os.Executable()
	if err != nil {
		return fail(err)
	}
	in, err := os.Open(self)
	if err != nil {
		return fail(err)
	}
	defer in.Close()
	tmp, err := os.CreateTemp(dir, ".proa-*")
	if err != nil {
		return fail(err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	_, err = io.Copy(tmp, in)
	if err == nil {
		err = tmp.Chmod(0o755)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), dst)
	}
	if err != nil {
		return fail(err)
	}
	return dst, nil
}
