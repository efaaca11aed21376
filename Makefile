# make test: every check CI runs (unit tests, the real-control-plane suite,
# then the real-node suite: proa in real Pods under a real kubelet).
# make test-node: only the real-node suite (needs root; installs containerd,
# runc, the CNI plugins, iptables and busybox-static when missing).
# make demo: a real kube-apiserver + etcd on loopback, a Pod with a slow
# sidecar, and proa doing its job, with a timeline at the end.
# The first run builds kube-apiserver and etcd from the Go module proxy
# (a few minutes); later runs reuse them from ~/.cache/proa-e2e.

GO ?= go

.PHONY: test unit e2e test-node demo fuzz size bench

test: unit e2e test-node

unit:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { gofmt -l .; echo "gofmt needed"; exit 1; }
	$(GO) vet ./...
	GOOS=darwin $(GO) vet ./...
	$(GO) test -race -count=1 ./...

# -v streams the control plane's build progress on a first run.
e2e:
	cd e2e && $(GO) vet ./... && $(GO) test -count=1 -timeout 30m -v .

# Run from the package directory so that the output (the kubelet's build on
# a first run) streams.
test-node:
	cd e2e/realnode && $(GO) test -count=1 -timeout 30m -v

demo:
	cd e2e && $(GO) run ./cmd/demo

# Fuzz the watch-stream decoder and the readiness decision for a while.
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzReadEvents -fuzztime 2m .
	$(GO) test -run '^$$' -fuzz FuzzReadiness -fuzztime 2m .

# proa's cost (size, memory, CPU, latencies, API requests) against the real
# control plane, as a table with the targets; README "Performance". Needs root.
# BENCHFLAGS=-quick for fewer runs, -json for machines.
bench:
	cd e2e && $(GO) run ./cmd/bench $(BENCHFLAGS)

# The shipped binary's size.
size:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o /tmp/proa-size . && ls -l /tmp/proa-size
