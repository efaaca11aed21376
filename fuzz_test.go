package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// seedStreams adds every recorded stream, whole and line by line.
func seedStreams(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.jsonl"))
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		for _, l := range bytes.Split(b, []byte("\n")) {
			f.Add(l)
			f.Add(l[:len(l)/2])
		}
	}
}

// FuzzReadEvents: no byte sequence on a watch stream may crash proa, and
// every event handed on is well formed.
func FuzzReadEvents(f *testing.F) {
	seedStreams(f)
	f.Add([]byte(`{"type":"ERROR","object":{"kind":"Status","code":410}}{"type":"BOOKMARK","object":{}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		readEvents(bytes.NewReader(data), func(ev event) error {
			switch ev.Type {
			case "ADDED", "MODIFIED", "DELETED":
				if ev.Pod == nil || ev.Pod.Metadata.Name == "" {
					t.Fatalf("%s event without a named pod", ev.Type)
				}
				sidecars := sidecarsOf(ev.Pod, "main")
				readiness(ev.Pod, sidecars)
				stillRunning(ev.Pod, sidecars)
			case "BOOKMARK":
				if ev.Pod == nil {
					t.Fatal("BOOKMARK without an object")
				}
			case "ERROR":
				if ev.Status == nil || ev.Status.Code == 0 {
					t.Fatal("ERROR without a status code")
				}
			default:
				t.Fatalf("event of type %q handed on", ev.Type)
			}
			return nil
		})
	})
}

// FuzzReadiness checks the readiness decision's promises on any Pod.
func FuzzReadiness(f *testing.F) {
	for _, l := range recorded(f, "watch-lifecycle.jsonl") {
		var ev struct{ Object json.RawMessage }
		json.Unmarshal([]byte(l), &ev)
		f.Add([]byte(ev.Object), "main")
		f.Add([]byte(ev.Object), "envoy")
	}
	f.Add([]byte(`{"spec":{"restartPolicy":"OnFailure","containers":[{"name":"a"},{"name":"b","restartPolicy":"Never"}]},"status":{"containerStatuses":[{"name":"b","state":{"terminated":{"exitCode":0}}}]}}`), "a")
	f.Fuzz(func(t *testing.T, podJSON []byte, self string) {
		p := new(pod)
		if json.Unmarshal(podJSON, p) != nil {
			return
		}
		sidecars := sidecarsOf(p, self)
		notReady, failed := readiness(p, sidecars)
		running := stillRunning(p, sidecars)
		for _, s := range sidecars {
			if s.name == self && !s.native {
				t.Fatalf("proa's own container %q counted as a sidecar", self)
			}
		}
		if failed != "" {
			return
		}
		if len(notReady) > len(sidecars) {
			t.Fatalf("%d not ready out of %d sidecars", len(notReady), len(sidecars))
		}
		if len(notReady) == 0 {
			for _, s := range sidecars {
				st := p.status(s)
				if st == nil || !st.Ready || st.State.Terminated != nil {
					t.Fatalf("ready, but sidecar %q has status %+v", s.name, st)
				}
			}
		}
		for _, name := range running {
			if !strings.Contains(names(sidecars, func(s sidecar) string { return s.name }), name) {
				t.Fatalf("still running %q is not a sidecar", name)
			}
		}
	})
}
