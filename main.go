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
//	--log-format FORMAT            json or text (env PROA_LOG_FORMAT)
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
// the Pod does not exist, or the API refused access for 30 s); 128+N when
// SIGTERM or SIGINT stopped proa before the command started; 2 for a usage
// error. Errors during shutdown are logged and never change the exit code.
//
// Signals TERM, INT, HUP, QUIT, USR1, USR2 and WINCH are forwarded to the
// command. As PID 1, proa reaps every zombie.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
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

Options:
  -g, --shutdown-http-get URL   GET URL at shutdown (repeatable)
  -p, --shutdown-http-post URL  POST to URL at shutdown (repeatable)
  -k, --kill NAME               signal processes named NAME at shutdown (repeatable);
                                needs shareProcessNamespace: true
  -K, --kill-all                signal every other process in the Pod at shutdown
  --kill-signal SIGNAL          signal for -k and -K (default TERM)
  --container NAME              proa's own container (PROA_CONTAINER_NAME)
  --timeout DURATION            longest wait for readiness, 0 = forever (PROA_TIMEOUT)
  --no-kube                     do not use the Kubernetes API (automatic when
                                KUBERNETES_SERVICE_HOST is unset)
  --shutdown-timeout DURATION   bound on shutdown (default: the Pod's grace period)
  --log-level LEVEL             debug, info, warn, error (PROA_LOG, RUST_LOG)
  --log-format FORMAT           json or text (PROA_LOG_FORMAT)
  -V, --version                 print the version
  -h, --help                    print this help

PROA_DISABLED=1 runs COMMAND directly. Exit codes: COMMAND's own, 128+N for
signal N, 127/126 when it cannot start, 69 when sidecars never became ready,
2 for a usage error.
`

// Exit codes of proa itself; the rest come from the command.
const (
	exitUsage       = 2
	exitUnavailable = 69 // EX_UNAVAILABLE: the sidecars never became ready
	exitCannotExec  = 126
	exitNotFound    = 127
)

type config struct {
	getURLs, postURLs []string
	killNames         []string // -k: signal processes with these executable names
	killAll           bool     // -K: signal every process but PID 1 and proa's own
	killSignal        syscall.Signal
	sidecars          []string // --sidecar: wait only for these
	waitHTTP, waitTCP []string
	readyAddr         string
	install           string // --install DIR
	container         string // from --container or PROA_CONTAINER_NAME
	containerFrom     string // which of the two set it, for the log
	timeout           time.Duration
	shutdownTimeout   time.Duration // 0: the Pod's grace period
	shutdownTimeoutOK bool          // --shutdown-timeout was given (0 is a valid value)
	logLevel          slog.Level
	logFormat         string
	disabled          bool
	noKube            bool
	command           []string

	// Where the outside world is; tests point these elsewhere.
	env            func(string) string
	serviceAccount string // directory with token, ca.crt and namespace
	mountinfo      string // /proc/self/mountinfo
}

// defaultServiceAccountDir is where the kubelet mounts the service account.
var defaultServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// usageError is bad input: proa prints it on one line and exits 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

var (
	errHelp    = errors.New("help requested")
	errVersion = errors.New("version requested")
)

type flagDef struct {
	short    string
	long     string
	hasValue bool
	set      func(c *config, v string) error
}

var flagDefs = []flagDef{
	{"g", "shutdown-http-get", true, func(c *config, v string) error {
		u, err := parseShutdownURL("--shutdown-http-get", v)
		c.getURLs = append(c.getURLs, u)
		return err
	}},
	{"p", "shutdown-http-post", true, func(c *config, v string) error {
		u, err := parseShutdownURL("--shutdown-http-post", v)
		c.postURLs = append(c.postURLs, u)
		return err
	}},
	{"k", "kill", true, func(c *config, v string) error {
		if v == "" || strings.Contains(v, "/") {
			return usagef("--kill %q is not an executable name: write its base name, e.g. --kill envoy", v)
		}
		c.killNames = append(c.killNames, v)
		return nil
	}},
	{"K", "kill-all", false, func(c *config, _ string) error {
		c.killAll = true
		return nil
	}},
	{"", "kill-signal", true, func(c *config, v string) (err error) {
		c.killSignal, err = parseSignal(v)
		return err
	}},
	{"", "sidecar", true, func(c *config, v string) error {
		if v == "" {
			return usagef("--sidecar needs a container name, e.g. --sidecar istio-proxy")
		}
		c.sidecars = append(c.sidecars, v)
		return nil
	}},
	{"", "wait-http", true, func(c *config, v string) error {
		u, err := parseURL("--wait-http", v, "http://127.0.0.1:15021/healthz/ready")
		c.waitHTTP = append(c.waitHTTP, u)
		return err
	}},
	{"", "wait-tcp", true, func(c *config, v string) error {
		if err := checkAddr(v, true); err != nil {
			return usagef("--wait-tcp %q is not HOST:PORT: write e.g. --wait-tcp 127.0.0.1:5432", v)
		}
		c.waitTCP = append(c.waitTCP, v)
		return nil
	}},
	{"", "ready-addr", true, func(c *config, v string) error {
		if err := checkAddr(v, false); err != nil {
			return usagef("--ready-addr %q is not [HOST]:PORT: write e.g. --ready-addr :9090", v)
		}
		c.readyAddr = v
		return nil
	}},
	{"", "install", true, func(c *config, v string) error {
		if v == "" {
			return usagef("--install needs a directory, e.g. --install /proa")
		}
		c.install = v
		return nil
	}},
	{"", "container", true, func(c *config, v string) error {
		if v == "" {
			return usagef("--container needs a container name, e.g. --container app")
		}
		c.container, c.containerFrom = v, "--container"
		return nil
	}},
	{"", "timeout", true, func(c *config, v string) (err error) {
		c.timeout, err = parseDuration("--timeout", v)
		return err
	}},
	{"", "shutdown-timeout", true, func(c *config, v string) (err error) {
		c.shutdownTimeout, err = parseDuration("--shutdown-timeout", v)
		c.shutdownTimeoutOK = true
		return err
	}},
	{"", "log-level", true, func(c *config, v string) (err error) {
		c.logLevel, err = parseLevel("--log-level", v)
		return err
	}},
	{"", "log-format", true, func(c *config, v string) (err error) {
		c.logFormat, err = parseLogFormat("--log-format", v)
		return err
	}},
	{"", "no-kube", false, func(c *config, _ string) error {
		c.noKube = true
		return nil
	}},
	{"V", "version", false, func(*config, string) error { return errVersion }},
	{"h", "help", false, func(*config, string) error { return errHelp }},
}

// parseConfig reads the command line and the PROA_* environment. Flags win
// over the environment. It returns errHelp, errVersion or a *usageError.
func parseConfig(args []string, env func(string) string) (*config, error) {
	c := &config{
		killSignal:     syscall.SIGTERM,
		logFormat:      "json",
		env:            env,
		serviceAccount: defaultServiceAccountDir,
		mountinfo:      "/proc/self/mountinfo",
	}
	if err := c.readEnv(); err != nil {
		return nil, err
	}
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			c.command = args[i+1:]
			break
		}
		if arg == "-" || !strings.HasPrefix(arg, "-") {
			c.command = args[i:]
			break
		}
		def, value, hasValue, err := lookupFlag(arg)
		if err != nil {
			return nil, err
		}
		name := "--" + def.long
		switch {
		case def.hasValue && !hasValue:
			if i+1 >= len(args) {
				return nil, usagef("%s needs a value (see proa --help)", name)
			}
			i++
			value = args[i]
		case !def.hasValue && hasValue:
			return nil, usagef("%s takes no value, got %q", name, value)
		}
		if err := def.set(c, value); err != nil {
			return nil, err
		}
	}
	switch {
	case c.install != "" && len(c.command) > 0:
		return nil, usagef("--install copies proa and exits, so it takes no COMMAND: write proa --install DIR")
	case c.install != "":
		return c, nil
	case len(c.command) == 0:
		return nil, usagef("missing COMMAND: write proa [OPTIONS] -- COMMAND [ARGS...]")
	}
	if !killSupported && (len(c.killNames) > 0 || c.killAll) {
		return nil, usagef("--kill and --kill-all need Linux's /proc: use --shutdown-http-get or --shutdown-http-post here")
	}
	return c, nil
}

// lookupFlag accepts --name, --name=value, -x, -xVALUE and -x=VALUE (as the
// Rust proa's parser did), and Go-style -name.
func lookupFlag(arg string) (def flagDef, value string, hasValue bool, err error) {
	name := strings.TrimLeft(arg, "-")
	if k := strings.IndexByte(name, '='); k >= 0 && (strings.HasPrefix(arg, "--") || k > 1) {
		name, value, hasValue = name[:k], name[k+1:], true
	}
	for _, d := range flagDefs {
		if d.long == name {
			return d, value, hasValue, nil
		}
	}
	if !strings.HasPrefix(arg, "--") {
		for _, d := range flagDefs {
			if d.short != "" && strings.HasPrefix(arg[1:], d.short) {
				rest := arg[1+len(d.short):]
				if rest == "" {
					return d, "", false, nil
				}
				if d.hasValue || strings.HasPrefix(rest, "=") {
					return d, strings.TrimPrefix(rest, "="), true, nil
				}
			}
		}
	}
	return def, "", false, usagef("unknown flag %s (see proa --help; put -- before COMMAND if it is the command's flag)", arg)
}

func (c *config) readEnv() error {
	var err error
	if v := c.env("PROA_CONTAINER_NAME"); v != "" {
		c.container, c.containerFrom = v, "PROA_CONTAINER_NAME"
	}
	if v := c.env("PROA_TIMEOUT"); v != "" {
		if c.timeout, err = parseDuration("PROA_TIMEOUT", v); err != nil {
			return err
		}
	}
	switch v, rust := c.env("PROA_LOG"), c.env("RUST_LOG"); {
	case v != "":
		if c.logLevel, err = parseLevel("PROA_LOG", v); err != nil {
			return err
		}
	case rust != "":
		c.logLevel = rustLogLevel(rust)
	}
	if v := c.env("PROA_LOG_FORMAT"); v != "" {
		if c.logFormat, err = parseLogFormat("PROA_LOG_FORMAT", v); err != nil {
			return err
		}
	}
	if v := c.env("PROA_DISABLED"); v != "" {
		if c.disabled, err = strconv.ParseBool(v); err != nil {
			return usagef("PROA_DISABLED=%q is not a boolean: write PROA_DISABLED=1 to disable proa, or unset it", v)
		}
	}
	return nil
}

func parseShutdownURL(flag, v string) (string, error) {
	return parseURL(flag, v, "http://127.0.0.1:15020/quitquitquit")
}

func parseURL(flag, v, example string) (string, error) {
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", usagef("%s %q is not an absolute http or https URL: write e.g. %s %s", flag, v, flag, example)
	}
	return u.String(), nil
}

// checkAddr accepts HOST:PORT with a numeric port; the host may be empty
// unless needHost.
func checkAddr(v string, needHost bool) error {
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return err
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || (n == 0 && needHost) || (needHost && host == "") {
		return errors.New("bad address")
	}
	return nil
}

// parseDuration takes Go durations ("90s", "2m30s") and plain seconds ("90").
func parseDuration(name, v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		if n, nerr := strconv.ParseUint(v, 10, 32); nerr == nil {
			d, err = time.Duration(n)*time.Second, nil
		}
	}
	if err != nil || d < 0 {
		return 0, usagef("%s %q is not a duration: write e.g. 90s, 5m or 1h30m", name, v)
	}
	return d, nil
}

// signals lists the signals --kill-signal takes by name.
var signals = map[string]syscall.Signal{
	"HUP": syscall.SIGHUP, "INT": syscall.SIGINT, "QUIT": syscall.SIGQUIT, "KILL": syscall.SIGKILL,
	"USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2, "TERM": syscall.SIGTERM, "ALRM": syscall.SIGALRM,
	"CONT": syscall.SIGCONT, "STOP": syscall.SIGSTOP, "WINCH": syscall.SIGWINCH, "PIPE": syscall.SIGPIPE,
}

// parseSignal takes TERM, SIGTERM, term or 15.
func parseSignal(v string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(v); err == nil && n > 0 && n < 65 {
		return syscall.Signal(n), nil
	}
	if s, ok := signals[strings.TrimPrefix(strings.ToUpper(v), "SIG")]; ok {
		return s, nil
	}
	return 0, usagef("--kill-signal %q is not a signal: write a name such as TERM, INT, QUIT or KILL, or a number", v)
}

func parseLevel(name, v string) (slog.Level, error) {
	if l, ok := levelWord(v); ok {
		return l, nil
	}
	return 0, usagef("%s %q is not a log level: write debug, info, warn or error", name, v)
}

func levelWord(v string) (slog.Level, bool) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "trace", "debug":
		return slog.LevelDebug, true
	case "info":
		return slog.LevelInfo, true
	case "warn", "warning":
		return slog.LevelWarn, true
	case "error":
		return slog.LevelError, true
	case "off":
		return slog.LevelError + 100, true
	}
	return 0, false
}

// rustLogLevel reads RUST_LOG the way Rust's env_logger would for the target
// "proa": a proa=LEVEL directive, else a bare global LEVEL, else info. It
// never fails, because RUST_LOG may be meant for the command.
func rustLogLevel(v string) slog.Level {
	global, target := slog.LevelInfo, slog.Level(0)
	var haveTarget bool
	for _, d := range strings.Split(v, ",") {
		d, _, _ = strings.Cut(d, "/")
		d = strings.TrimSpace(d)
		name, level, hasLevel := strings.Cut(d, "=")
		if !hasLevel {
			if l, ok := levelWord(d); ok {
				global = l
			} else if d == "proa" {
				target, haveTarget = slog.LevelDebug, true
			}
			continue
		}
		if l, ok := levelWord(level); ok && (name == "proa" || strings.HasPrefix(name, "proa::")) {
			target, haveTarget = l, true
		}
	}
	if haveTarget {
		return target
	}
	return global
}

func parseLogFormat(name, v string) (string, error) {
	switch v = strings.ToLower(v); v {
	case "json", "text":
		return v, nil
	}
	return "", usagef("%s %q is not a log format: write json or text", name, v)
}

func newLogger(c *config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.logLevel}
	if c.logFormat == "text" {
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
	if c.install != "" {
		if err := install(c.install); err != nil {
			fmt.Fprintln(os.Stderr, "proa:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if c.disabled {
		os.Exit(execDirectly(c.command))
	}
	os.Exit(run(context.Background(), c, newLogger(c, os.Stderr)))
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
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, forwardedSignals...)
	defer signal.Stop(sigs)

	log.Info("starting", "version", proaVersion(), "argv", c.command)
	code, self, ready := exitUnavailable, "", false
	probe, err := c.startProbe(log)
	var w *podWatcher
	if err == nil {
		w, err = startWatcher(ctx, c, log)
	}
	if err != nil {
		log.Error("sidecars never became ready", "err", err)
	} else {
		code, self, ready = waitReady(c, w, startConditions(ctx, c), sigs, log)
	}
	if ready {
		probe.setRunning(true)
		code = runCommand(c, sigs, log)
		probe.setRunning(false)
	}
	shutdown(ctx, c, w, self, log)
	probe.close()
	log.Info("exiting", "code", code)
	return code
}

func (c *config) startProbe(log *slog.Logger) (*readyServer, error) {
	if c.readyAddr == "" {
		return nil, nil
	}
	return serveReady(c.readyAddr, log)
}

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
// that puts proa into an emptyDir shared with the application's container.
// The copy is written to a temporary file and renamed, so that a half-copied
// binary is never executed.
func install(dir string) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("installing proa: %w", err)
	}
	in, err := os.Open(self)
	if err != nil {
		return fmt.Errorf("installing proa: %w", err)
	}
	defer in.Close()
	tmp, err := os.CreateTemp(dir, ".proa-*")
	if err != nil {
		return fmt.Errorf("installing proa into %s: %w", dir, err)
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
		err = os.Rename(tmp.Name(), filepath.Join(dir, "proa"))
	}
	if err != nil {
		return fmt.Errorf("installing proa into %s: %w", dir, err)
	}
	return nil
}
