package main

import (
	"bufio"
	"crypto/tls"
	"encoding/pem"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeAPI is an API server for one Pod: each request it receives is answered
// by the next handler the test queued, so a test scripts the exact sequence
// of answers and then checks the exact requests proa made.
type fakeAPI struct {
	t     *testing.T
	srv   *httptest.Server
	saDir string

	mu       sync.Mutex
	requests []apiRequest
	arrived  chan struct{} // signalled on every request

	answers chan http.HandlerFunc
}

type apiRequest struct {
	Method, Path string
	Query        url.Values
	Token        string
	Proto        int
	UserAgent    string
	At           time.Time
}

// newFakeAPI starts the server (TLS, HTTP/2) and writes a service-account
// directory that trusts it.
func newFakeAPI(t *testing.T) *fakeAPI { return newFakeAPIWith(t, nil) }

// newFakeAPIWith is newFakeAPI with the server's TLS configuration
// (nil: httptest's) set before it starts.
func newFakeAPIWith(t *testing.T, tlsConfig *tls.Config) *fakeAPI {
	f := &fakeAPI{t: t, answers: make(chan http.HandlerFunc, 100), arrived: make(chan struct{}, 100)}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	f.srv.EnableHTTP2 = true
	f.srv.TLS = tlsConfig
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	f.saDir = t.TempDir()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw})
	writeFile(t, filepath.Join(f.saDir, "ca.crt"), string(ca))
	writeFile(t, filepath.Join(f.saDir, "namespace"), "rec3\n")
	f.setToken("token-1")
	return f
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil { // atomic, as the kubelet swaps it
		t.Fatal(err)
	}
}

func (f *fakeAPI) setToken(tok string) { writeFile(f.t, filepath.Join(f.saDir, "token"), tok+"\n") }

// env is the environment proa sees in the Pod.
func (f *fakeAPI) env() map[string]string {
	host, port, _ := net.SplitHostPort(f.srv.Listener.Addr().String())
	return map[string]string{
		"KUBERNETES_SERVICE_HOST": host,
		"KUBERNETES_SERVICE_PORT": port,
		"POD_NAME":                "job-1",
		"POD_NAMESPACE":           "rec3",
	}
}

func (f *fakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.requests = append(f.requests, apiRequest{
		Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), Proto: r.ProtoMajor, UserAgent: r.UserAgent(),
		Token: strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "), At: time.Now(),
	})
	f.mu.Unlock()
	select {
	case f.arrived <- struct{}{}:
	default: // nobody waits: waitRequests also polls
	}
	select {
	case h := <-f.answers:
		h(w, r)
	case <-r.Context().Done():
	}
}

// answer queues handlers for the next requests, in order.
func (f *fakeAPI) answer(hs ...http.HandlerFunc) {
	for _, h := range hs {
		f.answers <- h
	}
}

func (f *fakeAPI) got() []apiRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]apiRequest(nil), f.requests...)
}

// waitRequests waits until n requests have arrived.
func (f *fakeAPI) waitRequests(n int) []apiRequest {
	f.t.Helper()
	deadline := time.After(20 * time.Second)
	for len(f.got()) < n {
		select {
		case <-f.arrived:
		case <-time.After(10 * time.Millisecond):
		case <-deadline:
			f.t.Fatalf("waited for %d API requests, got %d: %+v", n, len(f.got()), f.got())
		}
	}
	return f.got()
}

// recorded reads a testdata stream's lines.
func recorded(t testing.TB, name string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if sc.Text() != "" {
			lines = append(lines, sc.Text())
		}
	}
	return lines
}

// stream answers a watch: it sends lines, flushing each, then keeps the
// stream open until more arrive on live or live is closed (nil: end now).
func stream(lines []string, live <-chan string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush() // as the API server does, before any event
		send := func(l string) {
			w.Write([]byte(l + "\n"))
			w.(http.Flusher).Flush()
		}
		for _, l := range lines {
			send(l)
		}
		if live == nil {
			return
		}
		for {
			select {
			case l, ok := <-live:
				if !ok {
					return
				}
				send(l)
			case <-r.Context().Done():
				return
			}
		}
	}
}

// route answers a watch (a request for the collection) with watch, and
// any other request with get.
func route(watch, get http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("watch") == "1" {
			watch(w, r)
		} else {
			get(w, r)
		}
	}
}

// raw answers with a status, a body taken verbatim, and headers.
func raw(code int, body string, header ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.WriteHeader(code)
		w.Write([]byte(body))
	}
}

func (f *fakeAPI) file(name string) string {
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		f.t.Fatal(err)
	}
	return string(b)
}
