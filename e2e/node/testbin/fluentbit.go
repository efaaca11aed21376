package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// fluentBitMain stands in for Fluent Bit (/fluent-bit/bin/fluent-bit in
// its image), run as `fluent-bit -c FILE` with a YAML configuration. What
// the file asks for is what it does, as far as the real one would:
//
//	service:  http_server on: an HTTP server on http_listen (default
//	          0.0.0.0) : http_port (default 2020), serving GET
//	          /api/v1/health (200) only with health_check on
//	pipeline: inputs of name tail: the files matching path (comma-separated
//	          globs), from their start with read_from_head, else from their
//	          end (files appearing later: from their start); every line is
//	          a "record" event, whatever the outputs say
//
// It has no quit endpoint: SIGTERM or SIGINT makes it read what is left and
// exit 0. A flag or a kind of input it does not know is an error.
func fluentBitMain(args []string) {
	s, t, err := fluentBit(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "fluent-bit (the e2e stand-in, e2e/node/testbin/fluentbit.go): %v\n", err)
		os.Exit(1)
	}
	t.scan(true)
	go func() {
		for range time.Tick(250 * time.Millisecond) {
			t.scan(false)
		}
	}()
	s.beforeExit = func() { t.scan(false) }
	s.run()
}

// fluentBit is the sidecar and the tail inputs args and the configuration
// file they name describe.
func fluentBit(args []string) (sidecar, *tailer, error) {
	fs := flag.NewFlagSet("fluent-bit", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	file := fs.String("c", "", "")
	fs.StringVar(file, "config", "", "")
	if err := fs.Parse(args); err != nil {
		return sidecar{}, nil, fmt.Errorf("%v (a flag of the real Fluent Bit? teach the stand-in)", err)
	}
	if *file == "" || fs.NArg() > 0 {
		return sidecar{}, nil, fmt.Errorf("want -c FILE.yaml and nothing else, got %q", args)
	}
	if ext := filepath.Ext(*file); ext != ".yaml" && ext != ".yml" {
		return sidecar{}, nil, fmt.Errorf("%s: the stand-in reads YAML configurations only", *file)
	}
	text, err := os.ReadFile(*file)
	if err != nil {
		return sidecar{}, nil, err
	}
	cfg, err := parseFluentBitYAML(string(text))
	if err != nil {
		return sidecar{}, nil, fmt.Errorf("%s: %v", *file, err)
	}
	s := sidecar{name: "fluent-bit"}
	if on(cfg.service["http_server"]) {
		s.addr = net.JoinHostPort(orDefault(cfg.service["http_listen"], "0.0.0.0"), orDefault(cfg.service["http_port"], "2020"))
		if on(cfg.service["health_check"]) {
			s.readyPath = "/api/v1/health"
		}
	}
	t := &tailer{offsets: map[string]int64{}, emit: func(path, line string) {
		event("fluent-bit", "record", "input", "tail", "path", path, "log", line)
	}}
	for i, in := range cfg.inputs {
		if in["name"] != "tail" {
			return sidecar{}, nil, fmt.Errorf("input %d: name %q: the stand-in knows tail only", i+1, in["name"])
		}
		if in["path"] == "" {
			return sidecar{}, nil, fmt.Errorf("input %d (tail): no path", i+1)
		}
		for _, glob := range strings.Split(in["path"], ",") {
			t.globs = append(t.globs, tailGlob{strings.TrimSpace(glob), on(in["read_from_head"])})
		}
	}
	return s, t, nil
}

type fluentBitConfig struct {
	service map[string]string
	inputs  []map[string]string
}

// parseFluentBitYAML reads the little of Fluent Bit's YAML configuration
// the stand-in acts on: the service section's keys and each input's keys.
// It is line-based: block mappings and sequences, no flow style.
func parseFluentBitYAML(text string) (fluentBitConfig, error) {
	cfg := fluentBitConfig{service: map[string]string{}}
	var section, list string
	for n, line := range strings.Split(text, "\n") {
		if i := strings.Index(line, " #"); i >= 0 {
			line = line[:i]
		}
		item := strings.TrimSpace(line)
		if item == "" || strings.HasPrefix(item, "#") {
			continue
		}
		indent := len(line) - len(strings.TrimLeft(line, " "))
		newItem := strings.HasPrefix(item, "- ")
		key, value, ok := strings.Cut(strings.TrimPrefix(item, "- "), ":")
		if !ok {
			return cfg, fmt.Errorf("line %d: want KEY: VALUE, got %q", n+1, item)
		}
		key, value = strings.TrimSpace(key), strings.Trim(strings.TrimSpace(value), `"'`)
		switch {
		case indent == 0:
			if newItem || value != "" {
				return cfg, fmt.Errorf("line %d: want a section (service:, pipeline:, ...), got %q", n+1, item)
			}
			section, list = key, ""
		case section == "service":
			cfg.service[strings.ToLower(key)] = value
		case section == "pipeline" && !newItem && value == "":
			list = key // inputs, filters, outputs
		case section == "pipeline" && list == "inputs":
			if newItem {
				cfg.inputs = append(cfg.inputs, map[string]string{})
			}
			if len(cfg.inputs) == 0 {
				return cfg, fmt.Errorf("line %d: an input's key outside a list item", n+1)
			}
			cfg.inputs[len(cfg.inputs)-1][strings.ToLower(key)] = value
		}
	}
	return cfg, nil
}

// on is Fluent Bit's reading of a boolean property.
func on(v string) bool {
	switch strings.ToLower(v) {
	case "on", "true", "yes", "1":
		return true
	}
	return false
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// tailer follows files as Fluent Bit's tail input does, by polling.
type tailer struct {
	mu      sync.Mutex
	globs   []tailGlob
	offsets map[string]int64
	emit    func(path, line string)
}

type tailGlob struct {
	pattern  string
	fromHead bool // files found at the start are read from their start, not their end
}

// scan emits the complete lines written since the last scan; at the start,
// files not read from their head are only measured.
func (t *tailer) scan(start bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, glob := range t.globs {
		paths, _ := filepath.Glob(glob.pattern)
		for _, path := range paths {
			f, err := os.Open(path)
			if err != nil {
				continue
			}
			off, seen := t.offsets[path]
			if !seen && start && !glob.fromHead {
				if fi, err := f.Stat(); err == nil {
					t.offsets[path] = fi.Size()
				}
				f.Close()
				continue
			}
			data, _ := io.ReadAll(io.NewSectionReader(f, off, 1<<40))
			f.Close()
			end := bytes.LastIndexByte(data, '\n') + 1
			for _, l := range strings.SplitAfter(string(data[:end]), "\n") {
				if l != "" {
					t.emit(path, strings.TrimSuffix(l, "\n"))
				}
			}
			t.offsets[path] = off + int64(end)
		}
	}
}
