package main

import (
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"

	"proa/e2e/cluster"
)

// machine describes where the figures were measured.
type machine struct {
	CPU         string `json:"cpu"`
	Cores       int    `json:"cores"`
	MemoryMiB   int64  `json:"memory_mib"`
	Kernel      string `json:"kernel"`
	OS          string `json:"os"`
	Go          string `json:"go"`
	APIServer   string `json:"kube_apiserver"`
	Etcd        string `json:"etcd"`
	Virtualized bool   `json:"virtualized"`
}

func machineInfo() machine {
	m := machine{Cores: runtime.NumCPU(), APIServer: cluster.KubeVersion, Etcd: cluster.EtcdVersion,
		Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			k, v, _ := strings.Cut(line, ":")
			switch strings.TrimSpace(k) {
			case "model name":
				if m.CPU == "" {
					m.CPU = strings.TrimSpace(v)
				}
			case "flags":
				m.Virtualized = m.Virtualized || strings.Contains(" "+v+" ", " hypervisor ")
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				m.MemoryMiB = kb >> 10
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
				m.OS = strings.Trim(v, `"`)
			}
		}
	}
	// proa is built with the go command on PATH, which may differ from the
	// toolchain that built this benchmark.
	if out, err := exec.Command("go", "env", "GOVERSION").Output(); err == nil {
		m.Go = strings.TrimSpace(string(out))
	}
	return m
}
