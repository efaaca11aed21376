// Command baseline is the benchmark's yardstick for proa's binary size: a
// standard-library program that does only what proa cannot do without, TLS +
// HTTP + JSON + exec. It reads a CA bundle, GETs a URL over TLS (HTTP/2 when
// offered) with a bearer token, decodes the JSON answer, then runs a command
// and exits with its code. The benchmark builds it exactly as proa is built
// (CGO_ENABLED=0 go build -trimpath -ldflags='-s -w') and compares sizes.
//
//	baseline CA_FILE URL TOKEN COMMAND [ARGS...]
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
)

func main() {
	if len(os.Args) < 5 {
		fmt.Fprintln(os.Stderr, "usage: baseline CA_FILE URL TOKEN COMMAND [ARGS...]")
		os.Exit(2)
	}
	pem, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "baseline:", err)
		os.Exit(1)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2: true,
	}}
	req, err := http.NewRequest("GET", os.Args[2], nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "baseline:", err)
		os.Exit(1)
	}
	req.Header.Set("Authorization", "Bearer "+os.Args[3])
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, "baseline:", err)
		os.Exit(1)
	}
	var obj struct {
		Status struct {
			Phase string `json:"phase"`
		} `json:"status"`
	}
	err = json.NewDecoder(resp.Body).Decode(&obj)
	resp.Body.Close()
	if err != nil {
		fmt.Fprintln(os.Stderr, "baseline:", err)
		os.Exit(1)
	}
	cmd := exec.Command(os.Args[4], os.Args[5:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			os.Exit(ee.ExitCode())
		}
		fmt.Fprintln(os.Stderr, "baseline:", err)
		os.Exit(127)
	}
}
