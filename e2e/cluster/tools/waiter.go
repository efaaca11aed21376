//go:build ignore

// Command informer-waiter is the benchmark's stand-in for what users pick
// instead of proa: a minimal sidecar waiter built on client-go's informer,
// the pattern kubexit uses (watchtools.UntilWithSync over a ListWatch with a
// metadata.name field selector: LIST, then WATCH from the list's
// resourceVersion, relisting when the watch cannot resume). It waits until
// every --sidecar container is ready, runs COMMAND and exits with its code.
//
//	informer-waiter --sidecar NAME [--sidecar NAME...] -- COMMAND [ARGS...]
//
// It reads its Pod as client-go's in-cluster configuration does (the
// service-account directory, KUBERNETES_SERVICE_HOST/PORT), and its name from
// POD_NAME or the hostname. It logs JSON lines on stderr with the same
// messages proa uses for the same moments ("waiting for sidecars", "sidecars
// ready", "running command"), plus "watch error event" for an ERROR event on
// the watch (410 Expired after an API-server restart), which the
// benchmark counts.
//
// This file is not part of the e2e module (the build constraint above keeps
// client-go out of its go.mod): cluster.EnsureWaiter writes it, without the
// constraint, into a module of its own made from waiter.mod and waiter.sum,
// and builds it there.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
)

const saNamespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	var sidecars []string
	for len(args) > 0 && args[0] != "--" {
		if args[0] != "--sidecar" || len(args) < 2 {
			fmt.Fprintln(os.Stderr, "usage: informer-waiter --sidecar NAME [--sidecar NAME...] -- COMMAND [ARGS...]")
			return 2
		}
		sidecars = append(sidecars, args[1])
		args = args[2:]
	}
	if len(args) < 2 || len(sidecars) == 0 {
		fmt.Fprintln(os.Stderr, "usage: informer-waiter --sidecar NAME [--sidecar NAME...] -- COMMAND [ARGS...]")
		return 2
	}
	command := args[1:]
	ns, name, err := podIdentity()
	if err != nil {
		log.Error("finding the pod", "err", err)
		return 1
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		log.Error("in-cluster configuration", "err", err)
		return 1
	}
	cfg.UserAgent = "informer-waiter"
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		log.Error("client", "err", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	selector := fields.OneTermEqualSelector("metadata.name", name).String()
	pods := client.CoreV1().Pods(ns)
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = selector
			return pods.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = selector
			w, err := pods.Watch(ctx, o)
			if err != nil {
				return nil, err
			}
			return watch.Filter(w, func(ev watch.Event) (watch.Event, bool) {
				if st, ok := ev.Object.(*metav1.Status); ok && ev.Type == watch.Error {
					log.Warn("watch error event", "code", st.Code, "reason", st.Reason, "message", st.Message)
				}
				return ev, true
			}), nil
		},
	}
	log.Info("watching pod", "pod", ns+"/"+name)
	waiting := false
	_, err = watchtools.UntilWithSync(ctx, lw, &corev1.Pod{}, nil, func(ev watch.Event) (bool, error) {
		pod, ok := ev.Object.(*corev1.Pod)
		if !ok {
			return false, nil
		}
		if ev.Type == watch.Deleted {
			return false, errors.New("pod deleted")
		}
		notReady := unready(pod, sidecars)
		if len(notReady) == 0 {
			return true, nil
		}
		if !waiting {
			waiting = true
			log.Info("waiting for sidecars", "not_ready", notReady)
		}
		return false, nil
	})
	if err != nil {
		log.Error("sidecars never became ready", "err", err)
		if ctx.Err() != nil {
			return 143
		}
		return 69
	}
	log.Info("sidecars ready")
	stop()
	log.Info("running command", "argv0", command[0])
	cmd := exec.Command(command[0], command[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	err = cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	default:
		log.Error("running command", "err", err)
		return 127
	}
}

// unready lists the sidecars whose status is missing or not ready.
func unready(pod *corev1.Pod, sidecars []string) []string {
	ready := map[string]bool{}
	for _, s := range pod.Status.ContainerStatuses {
		ready[s.Name] = s.Ready
	}
	var out []string
	for _, s := range sidecars {
		if !ready[s] {
			out = append(out, s)
		}
	}
	return out
}

func podIdentity() (ns, name string, err error) {
	ns = os.Getenv("POD_NAMESPACE")
	if ns == "" {
		b, err := os.ReadFile(saNamespaceFile)
		if err != nil {
			return "", "", err
		}
		ns = strings.TrimSpace(string(b))
	}
	name = os.Getenv("POD_NAME")
	if name == "" {
		if name, err = os.Hostname(); err != nil {
			return "", "", err
		}
	}
	return ns, name, nil
}
