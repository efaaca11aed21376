package main

import (
	"errors"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// The test binary doubles as proa and as the programs proa runs: with
// PROA_TEST_AS set it becomes one of them instead of running tests.
func TestMain(m *testing.M) {
	if role, ok := testRoles[os.Getenv("PROA_TEST_AS")]; ok {
		role()
		os.Exit(0)
	}
	switch os.Getenv("PROA_TEST_AS") {
	case "":
		os.Exit(m.Run())
	case "proa":
		if dir := os.Getenv("PROA_TEST_SA_DIR"); dir != "" {
			defaultServiceAccountDir = dir
		}
		main()
	case "child":
		childMain(os.Args[1:])
	}
	panic("unreachable: " + os.Getenv("PROA_TEST_AS"))
}

// testRoles are more programs the test binary can become, registered by
// platform-specific test files.
var testRoles = map[string]func(){}

func env(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want config
	}{
		{"command only", []string{"app"}, nil,
			config{command: []string{"app"}}},
		{"separator", []string{"--", "app", "-g", "x"}, nil,
			config{command: []string{"app", "-g", "x"}}},
		{"parsing stops at the command", []string{"-g", "http://a/q", "app", "--timeout", "x"}, nil,
			config{getURLs: []string{"http://a/q"}, command: []string{"app", "--timeout", "x"}}},
		{"repeatable urls in every spelling", []string{"-g", "http://a/1", "-ghttp://a/2", "-g=http://a/3", "--shutdown-http-get=http://a/4",
			"--shutdown-http-post", "https://b/1", "-p", "http://[::1]:8080/q?x=1", "--", "app"}, nil,
			config{getURLs: []string{"http://a/1", "http://a/2", "http://a/3", "http://a/4"},
				postURLs: []string{"https://b/1", "http://[::1]:8080/q?x=1"}, command: []string{"app"}}},
		{"durations", []string{"--timeout", "2m", "--shutdown-timeout=0", "app"}, nil,
			config{timeout: 2 * time.Minute, shutdownTimeoutOK: true, command: []string{"app"}}},
		{"plain seconds", []string{"--timeout", "90", "app"}, nil,
			config{timeout: 90 * time.Second, command: []string{"app"}}},
		{"go-style single dash", []string{"-timeout=5s", "-no-kube", "app"}, nil,
			config{timeout: 5 * time.Second, noKube: true, command: []string{"app"}}},
		{"environment", []string{"app"}, map[string]string{"PROA_TIMEOUT": "1m", "PROA_LOG": "debug", "PROA_LOG_FORMAT": "text",
			"PROA_CONTAINER_NAME": "main", "PROA_DISABLED": "1"},
			config{timeout: time.Minute, logLevel: slog.LevelDebug, logFormat: "text", container: "main",
				containerFrom: "PROA_CONTAINER_NAME", disabled: true, command: []string{"app"}}},
		{"flags win over the environment", []string{"--timeout", "5s", "--container", "app", "--log-level", "warn", "app"},
			map[string]string{"PROA_TIMEOUT": "1m", "PROA_CONTAINER_NAME": "main", "PROA_LOG": "debug"},
			config{timeout: 5 * time.Second, container: "app", containerFrom: "--container", logLevel: slog.LevelWarn, command: []string{"app"}}},
		{"RUST_LOG target", []string{"app"}, map[string]string{"RUST_LOG": "warn,proa=debug"},
			config{logLevel: slog.LevelDebug, command: []string{"app"}}},
		{"PROA_LOG wins over RUST_LOG", []string{"app"}, map[string]string{"RUST_LOG": "debug", "PROA_LOG": "error"},
			config{logLevel: slog.LevelError, command: []string{"app"}}},
		{"PROA_DISABLED=0", []string{"app"}, map[string]string{"PROA_DISABLED": "0"},
			config{command: []string{"app"}}},
		{"kill mode", []string{"-k", "envoy", "--kill=pilot-agent", "-kvault", "-K", "--kill-signal", "SIGINT", "--", "app"}, nil,
			config{killNames: []string{"envoy", "pilot-agent", "vault"}, killAll: true, killSignal: syscall.SIGINT, command: []string{"app"}}},
		{"kill signal by number", []string{"--kill-signal=9", "app"}, nil,
			config{killSignal: syscall.SIGKILL, command: []string{"app"}}},
		{"kill signal in lower case", []string{"--kill-signal", "quit", "app"}, nil,
			config{killSignal: syscall.SIGQUIT, command: []string{"app"}}},
		{"dash alone is the command", []string{"-"}, nil,
			config{command: []string{"-"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseConfig(tt.args, env(tt.env))
			if err != nil {
				t.Fatalf("parseConfig(%q): %v", tt.args, err)
			}
			want := tt.want
			if want.killSignal == 0 {
				want.killSignal = syscall.SIGTERM
			}
			got.env = nil
			got.serviceAccount, got.mountinfo = "", ""
			if diff := cmp.Diff(want, *got, cmp.AllowUnexported(config{})); diff != "" {
				t.Errorf("parseConfig(%q) mismatch (-want +got):\n%s", tt.args, diff)
			}
		})
	}
}

func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{nil, nil, "missing COMMAND: write proa [OPTIONS] -- COMMAND [ARGS...]"},
		{[]string{"-g", "http://a/q"}, nil, "missing COMMAND: write proa [OPTIONS] -- COMMAND [ARGS...]"},
		{[]string{"--"}, nil, "missing COMMAND: write proa [OPTIONS] -- COMMAND [ARGS...]"},
		{[]string{"--bogus", "app"}, nil, "unknown flag --bogus (see proa --help; put -- before COMMAND if it is the command's flag)"},
		{[]string{"-x", "app"}, nil, "unknown flag -x (see proa --help; put -- before COMMAND if it is the command's flag)"},
		{[]string{"-g"}, nil, "--shutdown-http-get needs a value (see proa --help)"},
		{[]string{"-g", "localhost:8080/quit", "app"}, nil, `--shutdown-http-get "localhost:8080/quit" is not an absolute http or https URL: write e.g. --shutdown-http-get http://127.0.0.1:15020/quitquitquit`},
		{[]string{"-p", "/quit", "app"}, nil, `--shutdown-http-post "/quit" is not an absolute http or https URL: write e.g. --shutdown-http-post http://127.0.0.1:15020/quitquitquit`},
		{[]string{"-p", "ftp://h/quit", "app"}, nil, `--shutdown-http-post "ftp://h/quit" is not an absolute http or https URL: write e.g. --shutdown-http-post http://127.0.0.1:15020/quitquitquit`},
		{[]string{"--timeout", "soon", "app"}, nil, `--timeout "soon" is not a duration: write e.g. 90s, 5m or 1h30m`},
		{[]string{"--shutdown-timeout", "-5s", "app"}, nil, `--shutdown-timeout "-5s" is not a duration: write e.g. 90s, 5m or 1h30m`},
		{[]string{"--log-level", "loud", "app"}, nil, `--log-level "loud" is not a log level: write debug, info, warn or error`},
		{[]string{"--log-format", "xml", "app"}, nil, `--log-format "xml" is not a log format: write json or text`},
		{[]string{"--container", "", "app"}, nil, "--container needs a container name, e.g. --container app"},
		{[]string{"--no-kube=yes", "app"}, nil, `--no-kube takes no value, got "yes"`},
		{[]string{"--kill-signal", "TERMINATE", "app"}, nil, `--kill-signal "TERMINATE" is not a signal: write a name such as TERM, INT, QUIT or KILL, or a number`},
		{[]string{"--kill-signal", "0", "app"}, nil, `--kill-signal "0" is not a signal: write a name such as TERM, INT, QUIT or KILL, or a number`},
		{[]string{"-k", "/usr/bin/envoy", "app"}, nil, `--kill "/usr/bin/envoy" is not an executable name: write its base name, e.g. --kill envoy`},
		{[]string{"-K=1", "app"}, nil, `--kill-all takes no value, got "1"`},
		{[]string{"app"}, map[string]string{"PROA_TIMEOUT": "1 minute"}, `PROA_TIMEOUT "1 minute" is not a duration: write e.g. 90s, 5m or 1h30m`},
		{[]string{"app"}, map[string]string{"PROA_LOG": "verbose"}, `PROA_LOG "verbose" is not a log level: write debug, info, warn or error`},
		{[]string{"app"}, map[string]string{"PROA_LOG_FORMAT": "yaml"}, `PROA_LOG_FORMAT "yaml" is not a log format: write json or text`},
		{[]string{"app"}, map[string]string{"PROA_DISABLED": "yes please"}, `PROA_DISABLED="yes please" is not a boolean: write PROA_DISABLED=1 to disable proa, or unset it`},
	}
	for _, tt := range tests {
		_, err := parseConfig(tt.args, env(tt.env))
		var ue *usageError
		if !errors.As(err, &ue) {
			t.Errorf("parseConfig(%q, %v) = %v, want a usage error", tt.args, tt.env, err)
			continue
		}
		if err.Error() != tt.want {
			t.Errorf("parseConfig(%q, %v):\n got %s\nwant %s", tt.args, tt.env, err, tt.want)
		}
	}
	for _, args := range [][]string{{"-h"}, {"--help", "app"}, {"-help"}} {
		if _, err := parseConfig(args, env(nil)); !errors.Is(err, errHelp) {
			t.Errorf("parseConfig(%q) = %v, want errHelp", args, err)
		}
	}
	for _, args := range [][]string{{"-V"}, {"--version", "app"}} {
		if _, err := parseConfig(args, env(nil)); !errors.Is(err, errVersion) {
			t.Errorf("parseConfig(%q) = %v, want errVersion", args, err)
		}
	}
}

func TestRustLogLevel(t *testing.T) {
	tests := []struct {
		in   string
		want slog.Level
	}{
		{"proa=info", slog.LevelInfo},
		{"proa=debug", slog.LevelDebug},
		{"proa=trace", slog.LevelDebug},
		{"debug", slog.LevelDebug},
		{"warn,proa=error", slog.LevelError},
		{"proa::k8s=debug", slog.LevelDebug},
		{"proa", slog.LevelDebug},
		{"hyper=debug", slog.LevelInfo},
		{"error,hyper=debug", slog.LevelError},
		{"proa=debug/some regex", slog.LevelDebug},
		{"nonsense=!!,,", slog.LevelInfo},
		{"off", slog.LevelError + 100},
	}
	for _, tt := range tests {
		if got := rustLogLevel(tt.in); got != tt.want {
			t.Errorf("rustLogLevel(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// TestUsageListsEveryFlag keeps --help and the manual in step with the flags.
func TestUsageListsEveryFlag(t *testing.T) {
	doc, err := os.ReadFile("main.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range flagDefs {
		if !strings.Contains(usage, "--"+d.long+" ") {
			t.Errorf("usage lacks --%s", d.long)
		}
		if !strings.Contains(string(doc), "//\t--"+d.long) && !strings.Contains(string(doc), ", --"+d.long+" ") {
			t.Errorf("the package doc lacks --%s", d.long)
		}
	}
}
