package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
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
