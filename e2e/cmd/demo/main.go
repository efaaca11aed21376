// Command demo shows proa at work against a real kube-apiserver and etcd on
// loopback, with a simulated kubelet:
//
//	cd e2e && go run ./cmd/demo
//
// A Job-like Pod has two containers: "envoy", a sidecar that becomes ready
// only after a few seconds, and "main", whose entrypoint is proa running a
// small command that works for two seconds and exits with code 3. You see
// proa wait for the sidecar, run the command, tell the sidecar to quit, wait
// for it to exit and exit with the command's code; then a timeline.
//
// The first run builds kube-apiserver and etcd from the Go module proxy (a
// few minutes, cached in ~/.cache/proa-e2e). proa runs in private mount and
// UTS namespaces, as in a real Pod, so the demo needs root.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"proa/e2e/harness"
	"proa/e2e/kubelet"
)

func main() {
	kubelet.RunRoleIfRequested()
	os.Exit(run())
}

func run() int {
	readyAfter := flag.Duration("ready-after", 5*time.Second, "how long the sidecar takes to become ready")
	work := flag.Duration("work", 2*time.Second, "how long the command works")
	code := flag.Int("exit-code", 3, "the command's exit code")
	keep := flag.Bool("keep", false, "keep the working directory (logs, audit log, Pod files)")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "The demo runs proa in its own mount and UTS namespaces, as in a Pod: run it as root (e.g. sudo -E go run ./cmd/demo).")
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	step("Starting a control plane: etcd + kube-apiserver on 127.0.0.1 (built on first use)")
	env, err := harness.Setup(ctx, harness.Options{Log: os.Stdout, Output: os.Stdout,
		ProbePeriod: time.Second, Keep: *keep, ProaRequired: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 1
	}
	defer env.Close()

	step("Running Pod demo/job-1: sidecar \"envoy\" (ready after %s) and \"main\" with proa as entrypoint", *readyAfter)
	spec := kubelet.PodSpec{Name: "job-1", Namespace: "demo", Containers: []kubelet.Container{
		{Name: "main", Proa: &kubelet.Proa{
			Args: []string{"--shutdown-http-post", kubelet.URLOf("envoy", "/quit")},
			Command: kubelet.App("print", "hello from the command: working for "+work.String(),
				"sleep", work.String(), "exit", fmt.Sprint(*code))}},
		{Name: "envoy", Sidecar: &kubelet.Sidecar{ReadyAfter: *readyAfter, QuitDelay: 500 * time.Millisecond}},
	}}
	pod, err := env.Kubelet.Run(ctx, spec)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 1
	}
	defer pod.Close()
	fmt.Printf("    main's command line: proa --shutdown-http-post %s -- app sleep %s exit %d\n\n",
		pod.SidecarURL("envoy", "/quit"), work, *code)

	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute+*readyAfter+*work)
	defer cancel()
	ex, err := pod.WaitProaExit(wctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 1
	}
	phase, err := pod.WaitFinished(wctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 1
	}

	step("Timeline (t+0 = Pod created)")
	fmt.Print(indent(kubelet.Timeline(pod.Events(), pod.Created)))
	return summary(pod, ex, phase, *code)
}

// summary checks what the demo is meant to show and prints it.
func summary(pod *kubelet.Pod, ex kubelet.Exit, phase string, want int) int {
	step("Summary")
	ok := true
	check := func(good bool, format string, a ...any) {
		mark := "ok  "
		if !good {
			mark, ok = "FAIL", false
		}
		fmt.Printf("    %s %s\n", mark, fmt.Sprintf(format, a...))
	}
	ready, haveReady := pod.FirstWrite(kubelet.Ready("envoy"))
	started, haveStart := pod.FindEvent("main/app", "started")
	check(haveReady && haveStart && started.Time.After(ready.Sent),
		"the command started %s after the kubelet wrote envoy's ready status", since(ready.Done, started.Time))
	quit, haveQuit := pod.FindEvent("envoy", "quit requested")
	check(haveQuit, "proa asked envoy to quit (%v /quit)", quit.Fields["method"])
	term, haveTerm := pod.FirstWrite(kubelet.Terminated("envoy"))
	check(haveTerm && !term.Sent.After(ex.At), "proa exited %s after envoy's terminated status", since(term.Done, ex.At))
	check(ex.Code == want, "proa exited with code %d, the command's code", ex.Code)
	check(phase == "Failed" || want == 0, "the Pod finished: phase %s (a non-zero exit code fails a Job's Pod)", phase)
	if !ok {
		fmt.Println("\nThe demo did not go as expected; see the timeline above.")
		return 1
	}
	return 0
}

func since(a, b time.Time) string {
	if a.IsZero() || b.IsZero() {
		return "?"
	}
	return b.Sub(a).Round(time.Millisecond).String()
}

func step(format string, a ...any) {
	fmt.Printf("\n==> "+format+"\n", a...)
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ") + "\n"
}
