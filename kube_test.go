package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestTokenFileRereads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	writeFile(t, path, "one\n")
	tok := &tokenFile{path: path}
	get := func() string {
		t.Helper()
		s, err := tok.get()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if got := get(); got != "one" {
		t.Fatalf("token %q, want one (trimmed)", got)
	}
	writeFile(t, path, "two")
	if got := get(); got != "one" {
		t.Errorf("token %q within a minute of the last read, want the cached one", got)
	}
	tok.expire() // as after a 401
	if got := get(); got != "two" {
		t.Errorf("token %q after expire, want two", got)
	}
	saved := tokenMaxAge
	tokenMaxAge = 0 // every read is older than the limit
	t.Cleanup(func() { tokenMaxAge = saved })
	writeFile(t, path, "three")
	if got := get(); got != "three" {
		t.Errorf("token %q once the cached one is old, want three", got)
	}
	os.Remove(path) // mid-rotation, or gone: keep the last one
	if got := get(); got != "three" {
		t.Errorf("token %q with the file gone, want the last one", got)
	}
	empty := &tokenFile{path: filepath.Join(t.TempDir(), "token")}
	writeFile(t, empty.path, " \n")
	if _, err := empty.get(); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty token file: err = %v", err)
	}
}

func TestBackoff(t *testing.T) {
	var b backoff
	nominal := []time.Duration{800 * time.Millisecond, 1600 * time.Millisecond, 3200 * time.Millisecond, 6400 * time.Millisecond,
		12800 * time.Millisecond, 25600 * time.Millisecond, 30 * time.Second, 30 * time.Second}
	for i, d := range nominal {
		got := b.next()
		if got < d/2 || got >= d*3/2 {
			t.Errorf("step %d: %s, want within [%s, %s)", i, got, d/2, d*3/2)
		}
	}
	b.last = time.Now().Add(-backoffReset - time.Second) // two quiet minutes
	if got := b.next(); got >= 1200*time.Millisecond {
		t.Errorf("after two quiet minutes: %s, want the first step again", got)
	}
}

func TestNewKubeClientIPv6(t *testing.T) {
	f := newFakeAPI(t)
	c, err := newKubeClient(env(map[string]string{"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}), f.saDir)
	if err != nil {
		t.Fatal(err)
	}
	if c.base != "https://[fd00::1]:443" {
		t.Errorf("base %q, want https://[fd00::1]:443", c.base)
	}
	if _, err := newKubeClient(env(map[string]string{"KUBERNETES_SERVICE_HOST": "h"}), f.saDir); err == nil {
		t.Error("no error without KUBERNETES_SERVICE_PORT")
	}
	writeFile(t, filepath.Join(f.saDir, "ca.crt"), "not a certificate")
	if _, err := newKubeClient(env(f.env()), f.saDir); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("bad CA: err = %v", err)
	}
}

func TestEndOfShutdown(t *testing.T) {
	grace := func(term, deletion int64) *pod {
		p := new(pod)
		p.Spec.TerminationGracePeriodSeconds = &term
		if deletion >= 0 {
			p.Metadata.DeletionGracePeriodSeconds = &deletion
		}
		return p
	}
	start := time.Date(2026, 1, 1, 0, 0, 10, 0, time.UTC)
	// deleted is a Pod being deleted with that grace period, due at due.
	deleted := func(term, deletion int64, due time.Time) *pod {
		p := grace(term, deletion)
		p.Metadata.DeletionTimestamp = due.Format(time.RFC3339)
		return p
	}
	termAt := start.Add(-8 * time.Second) // SIGTERM came 8 s before the command exited
	tests := []struct {
		name        string
		c           config
		p           *pod
		terminating time.Time
		want        time.Duration // after start
	}{
		{"grace period", config{}, grace(30, -1), time.Time{}, 30 * time.Second},
		{"deletion's grace period wins", config{}, grace(30, 5), time.Time{}, 5 * time.Second},
		{"after a TERM: a second before the kubelet's SIGKILL", config{}, grace(30, -1), termAt, 21 * time.Second},
		{"after a TERM, long ago: at once", config{}, grace(5, -1), termAt, -4 * time.Second},
		{"--shutdown-timeout is the user's word", config{shutdownTimeout: 20 * time.Second, shutdownTimeoutOK: true}, grace(5, -1), termAt, 20 * time.Second},
		{"deletion due in 5 s: a second before", config{}, deleted(30, 30, start.Add(5*time.Second)), time.Time{}, 4 * time.Second},
		{"deletion due in 5 s, with a TERM: the earlier", config{}, deleted(30, 30, start.Add(5*time.Second)), termAt, 4 * time.Second},
		{"TERM earlier than the deletion's end", config{}, deleted(10, 10, start.Add(8*time.Second)), termAt, time.Second},
		{"deletion with a longer grace period than the Pod's", config{}, deleted(10, 60, start.Add(60*time.Second)), time.Time{}, 59 * time.Second},
		{"deletion due already", config{}, deleted(30, 30, start.Add(-3*time.Second)), time.Time{}, -4 * time.Second},
		{"--shutdown-timeout ignores the deletion", config{shutdownTimeout: 20 * time.Second, shutdownTimeoutOK: true}, deleted(30, 30, start.Add(5*time.Second)), termAt, 20 * time.Second},
	}
	for _, tt := range tests {
		if got := endOfShutdown(&tt.c, tt.p, start, tt.terminating).Sub(start); got != tt.want {
			t.Errorf("%s: shutdown ends %s after it starts, want %s", tt.name, got, tt.want)
		}
	}
}

// SPEC §3: the API connection never goes through HTTP_PROXY/HTTPS_PROXY: a
// Pod's proxy settings are meant for its application, and a proxy that
// cannot reach the service IP would hang proa. (Loopback is never proxied,
// so a request to the fake API server could not tell; the transport can.)
func TestAPIConnectionIgnoresProxyEnvironment(t *testing.T) {
	f := newFakeAPI(t)
	c, err := newKubeClient(env(f.env()), f.saDir)
	if err != nil {
		t.Fatal(err)
	}
	tr, ok := c.http.Transport.(*http.Transport)
	if !ok {
		t.Fatalf("transport %T, want *http.Transport", c.http.Transport)
	}
	if tr.Proxy != nil {
		t.Error("the API client's transport has a Proxy function: HTTPS_PROXY from the Pod's environment would apply")
	}
}

// testCA is a certificate authority and a serving certificate it signed for
// the loopback addresses, made for one test.
type testCA struct {
	pem  string // the CA certificate
	leaf tls.Certificate
}

func newTestCA(t *testing.T, name string) testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, DNSNames: []string{"kubernetes.default.svc"}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &leafKey.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return testCA{pem: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		leaf: tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: leafKey}}
}

// rotatingAPI is a fake API server whose serving certificate can be
// replaced, as when the cluster CA is rotated and kube-apiserver restarted.
func rotatingAPI(t *testing.T, first testCA) (*fakeAPI, *atomic.Pointer[tls.Certificate]) {
	current := new(atomic.Pointer[tls.Certificate])
	current.Store(&first.leaf)
	f := newFakeAPIWith(t, &tls.Config{
		Certificates: []tls.Certificate{first.leaf},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return &tls.Config{Certificates: []tls.Certificate{*current.Load()}, NextProtos: []string{"h2", "http/1.1"}}, nil
		},
	})
	writeFile(t, filepath.Join(f.saDir, "ca.crt"), first.pem)
	return f, current
}

// A rotated cluster CA is picked up when a connection fails verification:
// the kubelet updates ca.crt, kube-apiserver comes back with a certificate
// from the new CA, and the next connection works at once.
func TestCARotatedUnderTheWatch(t *testing.T) {
	fastTiming(t)
	oldCA, newCA := newTestCA(t, "old"), newTestCA(t, "new")
	f, serving := rotatingAPI(t, oldCA)
	lines := recorded(t, "watch-lifecycle.jsonl")
	f.answer(stream(lines[:3], make(chan string)), stream(lines[3:4], make(chan string)))
	w, logs := watchPod(t, f, "")
	waitFor(t, w, "rv 580", hasRV("580"))

	writeFile(t, filepath.Join(f.saDir, "ca.crt"), newCA.pem)
	serving.Store(&newCA.leaf)
	f.srv.CloseClientConnections() // kube-apiserver restarts with its new certificate
	waitFor(t, w, "rv 581 from a watch over a new connection", hasRV("581"))
	if n := strings.Count(logs.String(), "certificate"); n > 0 {
		t.Errorf("%d certificate errors logged, want none:\n%s", n, logs)
	}
}

// ca.crt is re-read at least every caMaxAge, also without a failure (a
// finished rotation removes the old CA), and a file that is unreadable or
// garbage mid-rotation keeps the CA in use.
func TestCARereadPeriodically(t *testing.T) {
	saved := caMaxAge
	caMaxAge = 0 // every new connection finds the last read too old
	t.Cleanup(func() { caMaxAge = saved })
	oldCA, newCA := newTestCA(t, "old"), newTestCA(t, "new")
	f, _ := rotatingAPI(t, oldCA)
	c, err := newKubeClient(env(f.env()), f.saDir)
	if err != nil {
		t.Fatal(err)
	}
	caPath := filepath.Join(f.saDir, "ca.crt")
	get := func() error {
		t.Helper()
		f.answer(raw(http.StatusOK, `{}`))
		c.http.CloseIdleConnections() // a new connection, a new verification
		resp, err := c.get(context.Background(), "/api/v1/namespaces/rec3/pods/job-1", nil)
		if err == nil {
			resp.Body.Close()
		} else {
			<-f.answers // not asked: drop the answer
		}
		return err
	}
	steps := []struct {
		name, file string // file "": removed
		wantOK     bool
	}{
		{"garbage in ca.crt: the CA in use is kept", "not a certificate", true},
		{"no ca.crt: the CA in use is kept", "", true},
		{"old CA replaced by the new one: re-read", newCA.pem, false},
	}
	for _, s := range steps {
		if s.file == "" {
			os.Remove(caPath)
		} else {
			writeFile(t, caPath, s.file)
		}
		if err := get(); (err == nil) != s.wantOK {
			t.Errorf("%s: request error %v, want ok=%v", s.name, err, s.wantOK)
		}
	}
}

// The host name is verified as strictly as crypto/tls does: a certificate
// from the trusted CA for other names is refused.
func TestCAVerifiesTheHostName(t *testing.T) {
	ca := newTestCA(t, "ca") // for 127.0.0.1, ::1 and kubernetes.default.svc
	f, _ := rotatingAPI(t, ca)
	e := f.env()
	e["KUBERNETES_SERVICE_HOST"] = "localhost"
	c, err := newKubeClient(env(e), f.saDir)
	if err != nil {
		t.Fatal(err)
	}
	f.answer(raw(http.StatusOK, `{}`))
	_, err = c.get(context.Background(), "/api/v1/namespaces/rec3/pods/job-1", nil)
	if err == nil || !strings.Contains(err.Error(), "not localhost") {
		t.Errorf("err = %v, want the host name refused", err)
	}
}
