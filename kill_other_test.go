//go:build !linux

package main

import (
	"errors"
	"testing"
)

func TestKillFlagsNeedLinux(t *testing.T) {
	for _, args := range [][]string{{"-k", "envoy", "app"}, {"-K", "app"}} {
		_, err := parseConfig(args, env(nil))
		var ue *usageError
		if !errors.As(err, &ue) {
			t.Errorf("parseConfig(%q) = %v, want a usage error", args, err)
		}
	}
}
