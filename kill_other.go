//go:build !linux

package main

import (
	"context"
	"log/slog"
)

// killSupported: -k and -K need Linux's /proc.
const killSupported = false

type process struct{ pid int }

func killProcesses(*config, *slog.Logger) []process { return nil }

func waitProcessesGone(context.Context, []process) []process { return nil }
