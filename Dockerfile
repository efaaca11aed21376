# proa as a container image: the static binary at /proa and nothing else,
# run as 65532:65532, with OCI labels. `make release` builds the same image
# for six platforms without Docker (dist/proa-image.oci.tar); this file is for
# those who build images with Docker (BuildKit, the default since Docker 23):
#
#   docker build -t proa:1.2.3 \
#     --build-arg VERSION=1.2.3 \
#     --build-arg REVISION=$(git rev-parse HEAD) \
#     --build-arg CREATED=$(date -u -d @$(git log -1 --format=%ct) +%Y-%m-%dT%H:%M:%SZ) \
#     --build-arg SOURCE_DATE_EPOCH=$(git log -1 --format=%ct) .
#
# Add --platform linux/arm64 (or a list, with docker buildx build --push) for
# other platforms: the build stage runs on the builder's own platform and
# cross-compiles, so no emulation is needed. SOURCE_DATE_EPOCH makes BuildKit
# record the commit time as the image's creation time.
#
# The image is meant to be copied from, or used as an initContainer with
# --install; in the application's image:
#
#   COPY --from=proa:1.2.3 /proa /proa

# The build stage's base, pinned by digest: golang:1.26.8-bookworm, the
# multi-platform index (linux/amd64, arm64/v8, arm/v7, 386, ppc64le) as
# recorded by docker-library/repo-info (repos/golang/remote/1.26.8-bookworm.md,
# commit 38e7883912ed). Go 1.26.8 is also the toolchain `make release` was
# checked with, so both build the same binary for the same VERSION. To move
# on, take the index digest (not a per-platform one) of a newer tag:
# docker buildx imagetools inspect golang:1.26-bookworm
FROM --platform=$BUILDPLATFORM golang:1.26.8-bookworm@sha256:f4191582e1522dfc5980a6bdc0309a756f9697f3e7d0f199c7e26fc82ab324fd AS build
ARG TARGETOS
ARG TARGETARCH
ARG TARGETVARIANT
# Printed by proa -V and sent in the User-Agent. Empty: 0.2.0-dev.
ARG VERSION
WORKDIR /src
# proa uses only the standard library: the build downloads nothing.
COPY go.mod go.sum *.go ./
# The Makefile's BUILD_ENV and BUILD_FLAGS, for the target platform
# (TARGETVARIANT v7 -> GOARM=7).
RUN CGO_ENABLED=0 GOAMD64=v1 GOARM64=v8.0 GOPPC64=power8 GORISCV64=rva20u64 \
    GOOS="$TARGETOS" GOARCH="$TARGETARCH" GOARM="${TARGETVARIANT#v}" \
    go build -trimpath -buildvcs=false -gcflags=all=-l -ldflags="-s -w -X main.version=${VERSION}" -o /out/proa .

FROM scratch
ARG VERSION
ARG REVISION
ARG CREATED
# The project has no public repository URL yet: pass one to label the image.
ARG SOURCE_URL
COPY --from=build /out/proa /proa
# distroless's "nonroot". proa needs no privileges of its own (kill mode
# signals other users' processes only with what the Pod grants; see
# examples/kill-mode.yaml).
USER 65532:65532
ENTRYPOINT ["/proa"]
# The labels of make release's image (e2e/oci.ProaImage).
LABEL org.opencontainers.image.title="proa" \
      org.opencontainers.image.description="Entrypoint for a Pod's main container: waits for sidecars, runs the command, stops the sidecars" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="Apache-2.0"
