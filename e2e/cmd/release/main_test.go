package main

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"proa/e2e/oci"
)

func TestParseFlags(t *testing.T) {
	ok := []string{"-dist", "d", "-image", "proa:1", "-version", "1.2.3", "-revision", "abc", "-created", "1767323045"}
	c, err := parseFlags(ok)
	if err != nil {
		t.Fatal(err)
	}
	if c.created.Format("2006-01-02T15:04:05Z07:00") != "2026-01-02T03:04:05Z" {
		t.Errorf("created = %v", c.created)
	}
	for _, bad := range []struct {
		args []string
		want string
	}{
		{ok[2:], "-dist is required"},
		{append(ok[:8:8], "-created", "yesterday"), "want Unix seconds"},
		{append(ok[:4:4], "-version", "1.2.3+build", "-revision", "abc", "-created", "1"), "not usable as an image tag"},
		{append(ok, "extra"), `unexpected argument "extra"`},
	} {
		if _, err := parseFlags(bad.args); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("parseFlags(%q) = %v, want an error with %q", bad.args, err, bad.want)
		}
	}
}

func TestBinaryNames(t *testing.T) {
	var got []string
	for _, p := range oci.Platforms {
		got = append(got, binaryName(p))
	}
	want := "proa-linux-amd64 proa-linux-arm64 proa-linux-arm-v7 proa-linux-ppc64le proa-linux-s390x proa-linux-riscv64"
	if strings.Join(got, " ") != want {
		t.Errorf("binary names %v, want %s (the Makefile's PLATFORMS with / as -)", got, want)
	}
}

// checkBinary refuses a binary for another machine and a dynamically
// linked one, and accepts the release's own.
func TestCheckBinary(t *testing.T) {
	needRelease(t)
	amd64, err := os.ReadFile(filepath.Join(dist, "proa-linux-amd64"))
	if err != nil {
		t.Fatal(err)
	}
	if err := checkBinary(amd64, oci.Platforms[0]); err != nil {
		t.Errorf("the release's amd64 binary: %v", err)
	}
	if err := checkBinary(amd64, oci.Platform{OS: "linux", Architecture: "arm64"}); err == nil || !strings.Contains(err.Error(), "built for EM_X86_64") {
		t.Errorf("amd64 binary checked as arm64: %v, want a wrong-machine error", err)
	}
	if runtime.GOARCH == "amd64" {
		sh, err := os.ReadFile("/bin/sh")
		if err != nil {
			t.Skip(err)
		}
		if err := checkBinary(sh, oci.Platforms[0]); err == nil {
			t.Error("/bin/sh (dynamically linked) accepted")
		}
	}
	if err := checkBinary([]byte("#!/bin/sh\n"), oci.Platforms[0]); err == nil {
		t.Error("a shell script accepted")
	}
}
