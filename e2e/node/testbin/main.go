// Command testbin is every test image of the real-node suite in one small
// static program, chosen by the base name it runs under (as busybox does):
//
//	pause     the Pod sandbox's process: waits for SIGTERM/SIGINT and reaps
//	          zombies (PID 1 of a Pod with shareProcessNamespace)
//	sidecar   (or any other name, e.g. envoy) an HTTP sidecar: ready after
//	          a delay, quits on a request, reacts to SIGTERM as configured
//	app       the application proa runs: actions given as arguments
//	mesh      a mesh-like TCP proxy to the API server that exits on
//	          /quitquitquit, as istio-proxy does
//	cloud-sql-proxy  the Cloud SQL Auth Proxy's stand-in, shaped by the
//	          proxy's own flags (health checks, /quitquitquit)
//	fluent-bit  Fluent Bit's stand-in, shaped by its YAML configuration
//	          (health endpoint, tail inputs); stopped by a signal only
//
// The sidecar role is shaped by its environment (SIDECAR_*, see
// sidecarFromEnv); the stand-ins of real images take the command lines
// those images take, so a manifest runs on them as written.
//
// Every role writes its events as JSON lines on stdout, {"time","src","msg",
// ...}, which the tests read back from the container's log.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	switch role := filepath.Base(os.Args[0]); role {
	case "pause":
		pauseMain()
	case "app":
		appMain(os.Args[1:])
	case "mesh":
		meshMain()
	case "cloud-sql-proxy":
		cloudSQLProxyMain(os.Args[1:])
	case "fluent-bit":
		fluentBitMain(os.Args[1:])
	default:
		sidecarFromEnv(role).run()
	}
}

// event prints one JSON event line on stdout.
func event(src, msg string, kv ...any) {
	m := map[string]any{"time": time.Now().UTC().Format(time.RFC3339Nano), "src": src, "msg": msg}
	for i := 0; i+1 < len(kv); i += 2 {
		m[fmt.Sprint(kv[i])] = kv[i+1]
	}
	b, _ := json.Marshal(m)
	os.Stdout.Write(append(b, '\n'))
}

// envDuration reads a duration ("3s") or a number of seconds ("15").
func envDuration(name string) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseFloat(v, 64); err == nil {
		return time.Duration(n * float64(time.Second))
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		fmt.Fprintf(os.Stderr, "testbin: %s=%q: %v\n", name, v, err)
		os.Exit(2)
	}
	return d
}

func envInt(name string, def int) int {
	if v := os.Getenv(name); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			fmt.Fprintf(os.Stderr, "testbin: %s=%q: %v\n", name, v, err)
			os.Exit(2)
		}
		return n
	}
	return def
}

func pauseMain() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		if s == syscall.SIGCHLD {
			for {
				var ws syscall.WaitStatus
				pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
			continue
		}
		os.Exit(0)
	}
}

// processes lists the processes visible in /proc: PID → comm, the
// executable's base name (empty when unreadable) and the real UID.
func processes() map[string]map[string]any {
	out := map[string]map[string]any{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		p := map[string]any{}
		if b, err := os.ReadFile("/proc/" + e.Name() + "/comm"); err == nil {
			p["comm"] = strings.TrimSpace(string(b))
		}
		if exe, err := os.Readlink("/proc/" + e.Name() + "/exe"); err == nil {
			p["exe"] = filepath.Base(exe)
		}
		if b, err := os.ReadFile("/proc/" + e.Name() + "/status"); err == nil {
			for _, l := range strings.Split(string(b), "\n") {
				if f := strings.Fields(l); len(f) > 1 && f[0] == "Uid:" {
					p["uid"], _ = strconv.Atoi(f[1])
				}
			}
		}
		out[e.Name()] = p
	}
	return out
}
