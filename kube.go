package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"
)

// kubeClient talks to the API server with the Pod's service account, as
// client-go's in-cluster configuration does, with the standard library only.
type kubeClient struct {
	base      string // https://host:port
	http      *http.Client
	token     *tokenFile
	userAgent string
}

func newKubeClient(env func(string) string, saDir string) (*kubeClient, error) {
	host, port := env("KUBERNETES_SERVICE_HOST"), env("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, errors.New("KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be set (the kubelet sets them in every Pod)")
	}
	ca := &caFile{path: filepath.Join(saDir, "ca.crt")}
	if err := ca.read(); err != nil {
		return nil, err
	}
	tok := &tokenFile{path: filepath.Join(saDir, "token")}
	if _, err := tok.get(); err != nil {
		return nil, err
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	// Never through HTTP_PROXY/HTTPS_PROXY: they are meant for the
	// application, and a proxy that cannot reach the service IP would hang
	// proa (client-go in a Pod and the Rust proa ignore them too).
	t.Proxy = nil
	t.TLSClientConfig = &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The certificate is verified, host name included, exactly as with
		// RootCAs, but against the CA as it is now: see caFile.
		InsecureSkipVerify: true,
		VerifyConnection:   func(cs tls.ConnectionState) error { return ca.verify(cs.PeerCertificates, host) },
	}
	t.ForceAttemptHTTP2 = true
	// The same health check client-go configures: a dead connection is
	// noticed within 45 s instead of the kernel's 15 minutes.
	t.HTTP2 = &http.HTTP2Config{SendPingTimeout: 30 * time.Second, PingTimeout: 15 * time.Second}
	t.ResponseHeaderTimeout = 30 * time.Second
	return &kubeClient{
		base:      "https://" + net.JoinHostPort(host, port),
		http:      &http.Client{Transport: t}, // no Timeout: it would cut the watch stream
		token:     tok,
		userAgent: fmt.Sprintf("proa/%s (%s/%s)", proaVersion(), runtime.GOOS, runtime.GOARCH),
	}, nil
}

// get sends GET path?query. A non-2xx answer is returned as an *apiError
// after the body is read and closed.
func (c *kubeClient) get(ctx context.Context, path string, query url.Values) (*http.Response, error) {
	token, err := c.token.get()
	if err != nil {
		return nil, err
	}
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		// The request's deadline is the watch's (minutes): a body that stops
		// coming must not hold the caller that long.
		stop := time.AfterFunc(errorBodyTimeout, func() { resp.Body.Close() })
		defer stop.Stop()
		defer resp.Body.Close()
		return nil, readAPIError(resp)
	}
	return resp, nil
}

// apiError is a Kubernetes Status: an HTTP error answer, or an ERROR event
// in a watch stream.
type apiError struct {
	Code       int    `json:"code"`
	Reason     string `json:"reason"`
	Message    string `json:"message"`
	retryAfter time.Duration
}

func (e *apiError) Error() string {
	s := fmt.Sprintf("%d %s", e.Code, http.StatusText(e.Code))
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

func readAPIError(resp *http.Response) *apiError {
	e := &apiError{}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(body, e) != nil || e.Message == "" {
		e.Message = strings.TrimSpace(string(body))
	}
	e.Code = resp.StatusCode
	if s, err := time.ParseDuration(resp.Header.Get("Retry-After") + "s"); err == nil && s > 0 {
		e.retryAfter = min(s, time.Minute)
	}
	return e
}

// tokenFile is the service-account token, re-read by path at most a minute
// after the last read (the kubelet rotates it by swapping a symlink) and
// after a 401. The token itself is never logged.
type tokenFile struct {
	path string

	mu     sync.Mutex
	token  string
	readAt time.Time
}

// tokenMaxAge is how long a token read from the file is used; a variable for
// tests.
var tokenMaxAge = time.Minute

// errorBodyTimeout bounds the read of an error answer's body; a variable for
// tests.
var errorBodyTimeout = 10 * time.Second

// caMaxAge bounds how long a read of ca.crt is used; a variable for tests.
var caMaxAge = 5 * time.Minute

func (t *tokenFile) get() (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.token != "" && time.Since(t.readAt) < tokenMaxAge {
		return t.token, nil
	}
	b, err := os.ReadFile(t.path)
	tok := strings.TrimSpace(string(b))
	if err == nil && tok == "" {
		err = errors.New("the file is empty")
	}
	if err != nil {
		if t.token != "" {
			return t.token, nil // keep using the last one; the file may be mid-rotation
		}
		return "", fmt.Errorf("reading the service-account token %s: %w", t.path, err)
	}
	t.token, t.readAt = tok, time.Now()
	return tok, nil
}

// expire makes the next get re-read the file.
func (t *tokenFile) expire() {
	t.mu.Lock()
	t.readAt = time.Time{}
	t.mu.Unlock()
}

// caFile is the cluster CA, ca.crt, re-read by path when a connection
// fails verification and at least every caMaxAge: the CA can be rotated
// under a running Pod (the kubelet updates the file from the
// kube-root-ca.crt ConfigMap), as client-go since 1.36 allows. A file that
// is unreadable or holds no certificate, as may happen mid-rotation, leaves
// the CA in use.
type caFile struct {
	path string

	mu     sync.Mutex
	pool   *x509.CertPool
	pem    []byte
	readAt time.Time
}

// read reads the file, and reports an error when it cannot be used.
func (f *caFile) read() error {
	b, err := os.ReadFile(f.path)
	if err != nil {
		return fmt.Errorf("reading the API server's CA: %w (is automountServiceAccountToken off?)", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.readAt = time.Now()
	if bytes.Equal(b, f.pem) {
		return nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return fmt.Errorf("reading the API server's CA: no PEM certificate in %s", f.path)
	}
	f.pool, f.pem = pool, b
	return nil
}

// current is the CA to verify with, read again if the last read is too old.
func (f *caFile) current() *x509.CertPool {
	f.mu.Lock()
	old := time.Since(f.readAt) >= caMaxAge
	f.mu.Unlock()
	if old {
		f.read() // on error, the CA in use stays
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pool
}

// verify checks the server's chain for host as crypto/tls does, and, when
// that fails, once more after reading the file again if it has changed.
func (f *caFile) verify(certs []*x509.Certificate, host string) error {
	pool := f.current()
	err := verifyChain(certs, pool, host)
	if err != nil && f.read() == nil {
		if again := f.current(); again != pool {
			err = verifyChain(certs, again, host)
		}
	}
	return err
}

func verifyChain(certs []*x509.Certificate, roots *x509.CertPool, host string) error {
	if len(certs) == 0 {
		return errors.New("tls: the API server sent no certificate")
	}
	opts := x509.VerifyOptions{Roots: roots, DNSName: host, Intermediates: x509.NewCertPool()}
	for _, c := range certs[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := certs[0].Verify(opts); err != nil {
		return &tls.CertificateVerificationError{UnverifiedCertificates: certs, Err: err}
	}
	return nil
}

// podIdentity finds the namespace and name of proa's own Pod: POD_NAMESPACE
// or the service account's namespace file; POD_NAME or the hostname up to its
// first dot (what the Rust proa did; it breaks with spec.hostname,
// hostNetwork and names over 63 characters, hence the downward-API hint).
func podIdentity(env func(string) string, saDir string) (ns, name string, err error) {
	ns = env("POD_NAMESPACE")
	if ns == "" {
		b, err := os.ReadFile(filepath.Join(saDir, "namespace"))
		if err != nil {
			return "", "", fmt.Errorf("finding proa's namespace: POD_NAMESPACE is unset and %w", err)
		}
		ns = strings.TrimSpace(string(b))
	}
	name = env("POD_NAME")
	if name == "" {
		h, err := os.Hostname()
		if err != nil {
			return "", "", fmt.Errorf("finding proa's Pod name: POD_NAME is unset and %w", err)
		}
		name, _, _ = strings.Cut(h, ".")
	}
	return ns, name, nil
}

// containerFromMountinfo finds proa's container name in /proc/self/mountinfo.
// The kubelet bind-mounts each container's termination-message file from
// .../pods/POD_UID/containers/CONTAINER/ID, and the mount's root field shows
// that path. It returns "" unless exactly one name matches.
func containerFromMountinfo(mountinfo, podUID string) string {
	if podUID == "" {
		return ""
	}
	marker := "/pods/" + podUID + "/containers/"
	found := ""
	sc := bufio.NewScanner(strings.NewReader(mountinfo))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		_, rest, ok := strings.Cut(fields[3], marker)
		if !ok {
			continue
		}
		name, _, _ := strings.Cut(rest, "/")
		if name == "" || (found != "" && found != name) {
			return ""
		}
		found = name
	}
	return found
}
