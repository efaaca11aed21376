package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
)

// cloudSQLProxyMain stands in for the Cloud SQL Auth Proxy v2
// (/cloud-sql-proxy in its image). It takes the proxy's command line and
// serves what those flags make the real proxy serve, so that a manifest
// missing one fails here as it would on a cluster:
//
//	--health-check       /startup, /liveness, /readiness (200 at once) on
//	                     --http-address (default localhost) : --http-port
//	                     (default 9090); without it, no such server
//	--quitquitquit       GET or POST /quitquitquit on the localhost-only
//	                     admin server, 127.0.0.1:--admin-port (default
//	                     9091): answers, then exits 0
//	--exit-zero-on-sigterm  SIGTERM exits 0 rather than 143
//	--address, --port    the client listener (default 127.0.0.1:5432),
//	                     which closes every connection (no Cloud SQL here)
//
// It needs at least one instance connection name (PROJECT:REGION:INSTANCE)
// and refuses flags it does not know, as the proxy refuses flags that do
// not exist.
func cloudSQLProxyMain(args []string) {
	s, err := cloudSQLProxy(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cloud-sql-proxy (the e2e stand-in, e2e/node/testbin/cloudsql.go): %v\n", err)
		os.Exit(1)
	}
	s.run()
}

// cloudSQLProxy is the sidecar the proxy's args describe.
func cloudSQLProxy(args []string) (sidecar, error) {
	fs := flag.NewFlagSet("cloud-sql-proxy", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	health := fs.Bool("health-check", false, "")
	quit := fs.Bool("quitquitquit", false, "")
	exitZero := fs.Bool("exit-zero-on-sigterm", false, "")
	fs.Bool("structured-logs", false, "") // every event is a JSON line anyway
	httpAddress := fs.String("http-address", "localhost", "")
	httpPort := fs.String("http-port", "9090", "")
	adminPort := fs.String("admin-port", "9091", "")
	address := fs.String("address", "127.0.0.1", "")
	fs.StringVar(address, "a", "127.0.0.1", "")
	port := fs.String("port", "5432", "")
	fs.StringVar(port, "p", "5432", "")

	// Flags may follow the instances, as the proxy's flag parser allows.
	var instances []string
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			return sidecar{}, fmt.Errorf("%v (a flag of the real proxy? teach the stand-in)", err)
		}
		if rest = fs.Args(); len(rest) == 0 {
			break
		}
		if parts := strings.Split(rest[0], ":"); len(parts) != 3 || slices.Contains(parts, "") {
			return sidecar{}, fmt.Errorf("invalid instance connection name %q: want PROJECT:REGION:INSTANCE", rest[0])
		}
		instances, rest = append(instances, rest[0]), rest[1:]
	}
	if len(instances) == 0 {
		return sidecar{}, fmt.Errorf("missing instance connection name (PROJECT:REGION:INSTANCE)")
	}
	s := sidecar{name: "cloud-sql-proxy", termCode: 143, listen: []string{net.JoinHostPort(*address, *port)}}
	if *exitZero {
		s.termCode = 0
	}
	if *health {
		s.addr = net.JoinHostPort(*httpAddress, *httpPort)
		s.readyPath, s.okPaths = "/readiness", []string{"/startup", "/liveness"}
	}
	if *quit {
		s.quitAddr = net.JoinHostPort("127.0.0.1", *adminPort)
		s.quit = []string{"GET /quitquitquit", "POST /quitquitquit"}
	}
	return s, nil
}
