# proa as a container image: a static binary at /proa and nothing else.
#
#   docker build --build-arg VERSION=0.2.0 -t proa:0.2.0 .
#
# The image is meant to be copied from, not run on its own:
#
#   COPY --from=proa:0.2.0 /proa /proa

FROM golang:1.26 AS build
# Printed by proa -V and sent in the User-Agent. Empty: the module version, or 0.2.0-dev.
ARG VERSION
WORKDIR /src
# proa uses only the standard library: the build downloads nothing.
COPY go.mod go.sum *.go ./
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" -o /proa .

FROM scratch
COPY --from=build /proa /proa
ENTRYPOINT ["/proa"]
