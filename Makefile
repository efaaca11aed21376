# make build: proa for this machine, as ./proa (built as released).
# make test: every check CI runs (unit tests, the real-control-plane suite,
# the release artefacts read back by skopeo and containerd, then the
# real-node suite: proa in real Pods under a real kubelet).
# make test-node: only the real-node suite (needs root; installs containerd,
# runc, the CNI plugins, iptables and busybox-static when missing).
# make demo: a real kube-apiserver + etcd on loopback, a Pod with a slow
# sidecar, and proa doing its job, with a timeline at the end.
# make release: the release artefacts in dist/ (no Docker needed): static
# binaries, SHA256SUMS and a multi-arch OCI image archive.
# make release-check: build the release twice, in two fresh clones of HEAD
# (one with an empty Go build cache), and compare every artefact byte for byte.
# The first e2e run builds kube-apiserver and etcd from the Go module proxy
# (a few minutes); later runs reuse them from ~/.cache/proa-e2e.

GO ?= go

# What the release says about itself. VERSION: the v* tag at HEAD without its
# "v" (1.2.3), else what git describe says (1.2.3-4-gabcdef0, or the short
# commit when there is no tag), with -dirty for uncommitted changes.
# REVISION: the commit. SOURCE_DATE_EPOCH: the commit's time, used as the
# image's creation time, so that two builds of one commit are identical.
# SOURCE_URL: the org.opencontainers.image.source label; empty (no label)
# until the project has a public repository URL.
VERSION ?= $(shell git describe --tags --match 'v[0-9]*' --always --dirty 2>/dev/null | sed 's/^v//')
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null)
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct HEAD 2>/dev/null)
SOURCE_URL ?=
# The image's name in the archive: docker load and ctr import call it
# IMAGE:VERSION (docker.io/library/proa:VERSION in full).
IMAGE ?= proa
DIST ?= dist

# How proa is built, the one definition (the Dockerfile mirrors it): static
# (no cgo), no file system paths (-trimpath), no VCS stamp (-buildvcs=false:
# the binary is the same from a clone, a tarball or a Docker context),
# stripped, the version set, no inlining (-gcflags=all=-l: 7% smaller, at a
# cost in CPU that only TLS handshakes notice; docs/performance.md, "Size").
# The CPU levels are Go's defaults, pinned so that
# a GOAMD64 or similar in the environment cannot change a release.
BUILD_ENV = CGO_ENABLED=0 GOAMD64=v1 GOARM64=v8.0 GOPPC64=power8 GORISCV64=rva20u64
BUILD_FLAGS = -trimpath -buildvcs=false -gcflags=all=-l -ldflags='-s -w -X main.version=$(VERSION)'
# OS/ARCH[/VARIANT]; dist/proa-OS-ARCH[-VARIANT]. e2e/oci.Platforms lists the same.
PLATFORMS = linux/amd64 linux/arm64 linux/arm/v7 linux/ppc64le linux/s390x linux/riscv64

.PHONY: build test unit e2e release-test test-node release release-check demo fuzz size bench bench-scale

build:
	$(BUILD_ENV) $(GO) build $(BUILD_FLAGS) -o proa .

# The e2e suite's one slow scenario (a stalled watch: three idle minutes on
# a real kube-apiserver) runs alongside the rest of make test rather than
# before it, which saves those minutes; its output comes at the end.
SLOW_E2E = TestStalledWatchOverHTTP1

test: unit
	@slow=$$(mktemp); \
	(cd e2e && $(GO) test -count=1 -timeout 30m -v -run '^$(SLOW_E2E)$$' .) > $$slow 2>&1 & pid=$$!; \
	rc=0; $(MAKE) --no-print-directory e2e release-test test-node E2EFLAGS="-skip '^$(SLOW_E2E)'" || rc=$$?; \
	wait $$pid || rc=1; \
	echo "== $(SLOW_E2E), run alongside:"; cat $$slow; rm -f $$slow; \
	exit $$rc

unit:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { gofmt -l .; echo "gofmt needed"; exit 1; }
	$(GO) vet ./...
	GOOS=darwin $(GO) vet ./...
	$(GO) test -race -count=1 ./...

# -v streams the control plane's build progress on a first run.
e2e:
	cd e2e && $(GO) vet ./... && $(GO) test -count=1 -timeout 30m -v $(E2EFLAGS) .

# The OCI archive writer, and the release read back: the test runs make
# release into a temporary directory, then checks the artefacts with skopeo
# and containerd's ctr (installing them from Debian's packages when missing,
# as root).
release-test:
	cd e2e && $(GO) test -count=1 -timeout 20m ./oci ./cmd/release

release:
	@test -n "$(VERSION)" -a -n "$(REVISION)" -a -n "$(SOURCE_DATE_EPOCH)" || { \
		echo "make release: VERSION, REVISION or SOURCE_DATE_EPOCH is empty (not a git checkout?): set them, e.g. make release VERSION=1.2.3 REVISION=\$$(git rev-parse HEAD) SOURCE_DATE_EPOCH=\$$(git log -1 --format=%ct)"; exit 2; }
	@mkdir -p $(DIST) && rm -f $(DIST)/proa-linux-* $(DIST)/proa-image.oci.tar $(DIST)/SHA256SUMS
	@set -e; for p in $(PLATFORMS); do \
		os=$${p%%/*}; arch=$${p#*/}; arch=$${arch%%/*}; variant=$$(echo $$p | cut -s -d/ -f3); \
		out=$(DIST)/proa-$$(echo $$p | tr / -); echo "go build $$out"; \
		$(BUILD_ENV) GOOS=$$os GOARCH=$$arch GOARM=$${variant#v} $(GO) build $(BUILD_FLAGS) -o $$out .; \
	done
	cd e2e && $(GO) run ./cmd/release -dist $(abspath $(DIST)) -image $(IMAGE):$(VERSION) \
		-version $(VERSION) -revision $(REVISION) -created $(SOURCE_DATE_EPOCH) -source '$(SOURCE_URL)'

# Two clones of HEAD in two temporary directories of different names; the
# second builds with an empty Go build cache, so nothing is shared but the
# module cache (which holds no proa code). Uncommitted changes are not part
# of the check: commit first.
release-check:
	@set -e; tmp=$$(mktemp -d /tmp/proa-release-check.XXXXXX); trap 'chmod -R u+w $$tmp; rm -rf $$tmp' EXIT; \
	rev=$$(git rev-parse HEAD); \
	git clone -q --no-checkout . $$tmp/a && git -C $$tmp/a checkout -q --detach $$rev; \
	git clone -q --no-checkout . $$tmp/second-build && git -C $$tmp/second-build checkout -q --detach $$rev; \
	echo "build 1: $$tmp/a (shared build cache)"; \
	$(MAKE) -s -C $$tmp/a release SOURCE_URL='$(SOURCE_URL)' IMAGE=$(IMAGE) >/dev/null; \
	echo "build 2: $$tmp/second-build (empty build cache)"; \
	GOCACHE=$$tmp/gocache $(MAKE) -s -C $$tmp/second-build release SOURCE_URL='$(SOURCE_URL)' IMAGE=$(IMAGE) >/dev/null; \
	ls $$tmp/a/dist | sort > $$tmp/list-a; ls $$tmp/second-build/dist | sort > $$tmp/list-b; \
	cmp -s $$tmp/list-a $$tmp/list-b || { echo "release-check: different file lists"; diff $$tmp/list-a $$tmp/list-b; exit 1; }; \
	for f in $$(cat $$tmp/list-a); do cmp $$tmp/a/dist/$$f $$tmp/second-build/dist/$$f; done; \
	echo "release-check: $$(wc -l < $$tmp/list-a) artefacts of $$rev identical:"; \
	cat $$tmp/a/dist/SHA256SUMS

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

# The shipped binary's size.
size:
	$(BUILD_ENV) $(GO) build $(BUILD_FLAGS) -o /tmp/proa-size . && ls -l /tmp/proa-size
