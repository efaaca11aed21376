# make test: every check CI runs (unit tests, then the real-control-plane suite).
# make demo: a real kube-apiserver + etcd on loopback, a Pod with a slow
# sidecar, and proa doing its job, with a timeline at the end.
# The first run builds kube-apiserver and etcd from the Go module proxy
# (a few minutes); later runs reuse them from ~/.cache/proa-e2e.

GO ?= go

.PHONY: test unit e2e demo fuzz size bench bench-scale

test: unit e2e

unit:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { gofmt -l .; echo "gofmt needed"; exit 1; }
	$(GO) vet ./...
	GOOS=darwin $(GO) vet ./...
	$(GO) test -race -count=1 ./...

# -v streams the control plane's build progress on a first run.
e2e:
	cd e2e && $(GO) vet ./... && $(GO) test -count=1 -timeout 30m -v .

demo:
	cd e2e && $(GO) run ./cmd/demo

# Fuzz the watch-stream decoder and the readiness decision for a while.
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzReadEvents -fuzztime 2m .
	$(GO) test -run '^$$' -fuzz FuzzReadiness -fuzztime 2m .

# proa's cost (size, memory, CPU, latencies, API requests) against the real
# control plane, as a table with the targets; docs/performance.md. Needs root.
# BENCHFLAGS=-quick for fewer runs, -json for machines.
bench:
	cd e2e && $(GO) run ./cmd/bench $(BENCHFLAGS)

# The scale run: 1,000 Pods with 1,000 proa at once, then 1,000 client-go
# informer waiters, on the real control plane (about 15 minutes, as root; it
# builds the informer waiter once). SCALEFLAGS='-scale-pods 100' for a
# quicker one; SCALEOUT=DIR also writes scale.md, scale.json and
# reconnects.svg there (docs/scale holds those of the run in the docs).
SCALEOUT ?=
bench-scale:
	cd e2e && $(GO) run ./cmd/bench -scale $(if $(SCALEOUT),-scale-out $(abspath $(SCALEOUT))) $(SCALEFLAGS)

# The shipped binary's size. -gcflags=all=-l (no inlining) takes 7% off it:
# docs/performance.md, "Size".
size:
	CGO_ENABLED=0 $(GO) build -trimpath -gcflags=all=-l -ldflags='-s -w' -o /tmp/proa-size . && ls -l /tmp/proa-size
