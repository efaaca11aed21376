package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// Step 1: the answer's status decides; the body is not waited for (a
// sidecar may stream it, or keep it open while it drains).
func TestShutdownRequestDoesNotWaitForTheBody(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	start := time.Now()
	if _, err := shutdownRequest(context.Background(), http.DefaultClient, "POST", srv.URL, until(start.Add(20*time.Second))); err != nil {
		t.Errorf("err = %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the request took %s: it waited for the body", d)
	}
}
