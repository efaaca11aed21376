package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// config is everything proa was told, validated: the rest of proa never
// reads flags or PROA_* variables.
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
	if q := strconv.Quote(arg); q != `"`+arg+`"` {
		arg = q // keep the error on one line
	}
	return def, "", false, usagef("unknown flag %s (see proa --help; put -- before COMMAND if it is the command's flag)", arg)
}

// canStopSidecars tells whether proa was given a way to stop sidecars.
func (c *config) canStopSidecars() bool {
	return len(c.getURLs)+len(c.postURLs)+len(c.killNames) > 0 || c.killAll
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

// signalNames lists the signals --kill-signal takes by name, and the names
// logs give them.
var signalNames = map[string]syscall.Signal{
	"HUP": syscall.SIGHUP, "INT": syscall.SIGINT, "QUIT": syscall.SIGQUIT, "KILL": syscall.SIGKILL,
	"USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2, "TERM": syscall.SIGTERM, "ALRM": syscall.SIGALRM,
	"CONT": syscall.SIGCONT, "STOP": syscall.SIGSTOP, "WINCH": syscall.SIGWINCH, "PIPE": syscall.SIGPIPE,
	"ABRT": syscall.SIGABRT, "SEGV": syscall.SIGSEGV, "BUS": syscall.SIGBUS, "FPE": syscall.SIGFPE,
	"ILL": syscall.SIGILL, "TRAP": syscall.SIGTRAP, "SYS": syscall.SIGSYS, "TSTP": syscall.SIGTSTP,
	"TTIN": syscall.SIGTTIN, "TTOU": syscall.SIGTTOU, "URG": syscall.SIGURG, "CHLD": syscall.SIGCHLD,
	"XCPU": syscall.SIGXCPU, "XFSZ": syscall.SIGXFSZ, "VTALRM": syscall.SIGVTALRM, "PROF": syscall.SIGPROF,
}

// signalName names a signal as people write it: SIGTERM, not "terminated".
func signalName(sig os.Signal) string {
	if s, ok := sig.(syscall.Signal); ok {
		for name, v := range signalNames {
			if v == s {
				return "SIG" + name
			}
		}
		return fmt.Sprintf("signal %d", int(s))
	}
	return sig.String()
}

// parseSignal takes TERM, SIGTERM, term or 15.
func parseSignal(v string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(v); err == nil && n > 0 && n < 65 {
		return syscall.Signal(n), nil
	}
	if s, ok := signalNames[strings.TrimPrefix(strings.ToUpper(v), "SIG")]; ok {
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

// redact hides a URL's password, for logs (net/http's errors hide it too).
func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return s
	}
	return u.Redacted()
}
