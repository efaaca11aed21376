package main

import (
	"fmt"
	"slices"
	"time"
)

// pod holds the few fields of a Pod that proa reads. Decoding into it skips
// everything else (managedFields, env, volumes), which keeps memory flat
// however large the Pod is.
type pod struct {
	Metadata struct {
		Name              string `json:"name"`
		Namespace         string `json:"namespace"`
		UID               string `json:"uid"`
		ResourceVersion   string `json:"resourceVersion"`
		DeletionTimestamp string `json:"deletionTimestamp"`
		// DeletionGracePeriodSeconds is the grace period of a deletion under
		// way, which kubectl delete --grace-period may have shortened.
		DeletionGracePeriodSeconds *int64            `json:"deletionGracePeriodSeconds"`
		Annotations                map[string]string `json:"annotations"`
	} `json:"metadata"`
	Spec struct {
		Containers                    []containerSpec `json:"containers"`
		InitContainers                []containerSpec `json:"initContainers"`
		RestartPolicy                 string          `json:"restartPolicy"`
		TerminationGracePeriodSeconds *int64          `json:"terminationGracePeriodSeconds"`
	} `json:"spec"`
	Status struct {
		Phase                 string            `json:"phase"`
		ContainerStatuses     []containerStatus `json:"containerStatuses"`
		InitContainerStatuses []containerStatus `json:"initContainerStatuses"`
	} `json:"status"`
}

type containerSpec struct {
	Name          string `json:"name"`
	RestartPolicy string `json:"restartPolicy"`
}

type containerStatus struct {
	Name         string `json:"name"`
	Ready        bool   `json:"ready"`
	RestartCount int    `json:"restartCount"`
	State        struct {
		Waiting *struct {
			Reason string `json:"reason"`
		} `json:"waiting"`
		Running *struct {
			StartedAt string `json:"startedAt"`
		} `json:"running"`
		Terminated *terminatedState `json:"terminated"`
	} `json:"state"`
	// LastState is the previous run's end, once the kubelet has restarted
	// the container.
	LastState struct {
		Terminated *terminatedState `json:"terminated"`
	} `json:"lastState"`
}

type terminatedState struct {
	ExitCode   int    `json:"exitCode"`
	Signal     int    `json:"signal"`
	Reason     string `json:"reason"`
	FinishedAt string `json:"finishedAt"` // RFC 3339, whole seconds
}

// sidecar is a container proa waits for.
type sidecar struct {
	name string
	// native sidecars are init containers with restartPolicy Always: the
	// kubelet always restarts them and stops them after the main containers.
	native bool
	// restartPolicy is the one that applies to this container: its own, when
	// set, else the Pod's.
	restartPolicy string
}

// splitContainers sorts the Pod's containers, other than proa's own: the
// sidecars proa waits for are every regular container and every native
// sidecar, or with --sidecar only those named; the regular containers that
// are not named are peers, other main containers.
func splitContainers(p *pod, self string, only []string) (sidecars, peers []sidecar) {
	listed := func(name string) bool { return len(only) == 0 || slices.Contains(only, name) }
	for _, c := range p.Spec.Containers {
		if c.Name == self {
			continue
		}
		policy := p.Spec.RestartPolicy
		if c.RestartPolicy != "" {
			policy = c.RestartPolicy
		}
		if listed(c.Name) {
			sidecars = append(sidecars, sidecar{name: c.Name, restartPolicy: policy})
		} else {
			peers = append(peers, sidecar{name: c.Name, restartPolicy: policy})
		}
	}
	for _, c := range p.Spec.InitContainers {
		if c.RestartPolicy == "Always" && listed(c.Name) {
			sidecars = append(sidecars, sidecar{name: c.Name, native: true, restartPolicy: "Always"})
		}
	}
	return sidecars, peers
}

// checkSidecarNames rejects --sidecar names that are not sidecars of the Pod.
func checkSidecarNames(p *pod, self string, only []string) error {
	sidecars, _ := splitContainers(p, self, nil) // every candidate
	for _, name := range only {
		if name == self {
			return fmt.Errorf("--sidecar %s names proa's own container", name)
		}
		if !slices.ContainsFunc(sidecars, func(s sidecar) bool { return s.name == name }) {
			return fmt.Errorf("--sidecar %s is not a container of Pod %s/%s: its sidecars can be %s", name,
				p.Metadata.Namespace, p.Metadata.Name, names(sidecars, func(s sidecar) string { return s.name }))
		}
	}
	return nil
}

func (p *pod) status(s sidecar) *containerStatus {
	list := p.Status.ContainerStatuses
	if s.native {
		list = p.Status.InitContainerStatuses
	}
	for i := range list {
		if list[i].Name == s.name {
			return &list[i]
		}
	}
	return nil
}

// readiness decides whether every sidecar is ready. notReady says, for each
// one that is not, why; failed is non-empty when a sidecar has terminated and
// will not be restarted, so waiting longer is pointless.
func readiness(p *pod, sidecars []sidecar) (notReady []string, failed string) {
	for _, s := range sidecars {
		st := p.status(s)
		switch {
		case st == nil:
			notReady = append(notReady, s.name+": no status yet")
		case st.State.Terminated != nil:
			t := st.State.Terminated
			if !s.native && willNotRestart(s.restartPolicy, t.ExitCode) {
				return notReady, fmt.Sprintf("sidecar %s terminated with exit code %d before it was ready, and restartPolicy %s will not restart it", s.name, t.ExitCode, s.restartPolicy)
			}
			notReady = append(notReady, fmt.Sprintf("%s: terminated with exit code %d, waiting for a restart", s.name, t.ExitCode))
		case st.Ready:
		case st.State.Running != nil:
			notReady = append(notReady, s.name+": running, not ready")
		case st.State.Waiting != nil && st.State.Waiting.Reason != "":
			notReady = append(notReady, s.name+": waiting ("+st.State.Waiting.Reason+")")
		default:
			notReady = append(notReady, s.name+": waiting")
		}
	}
	return notReady, ""
}

// willNotRestart applies the kubelet's restart rules to a terminated
// container. A missing policy means Always, the API server's default.
func willNotRestart(policy string, exitCode int) bool {
	return policy == "Never" || (policy == "OnFailure" && exitCode == 0)
}

// stillRunning lists the regular containers that have not terminated. Native
// sidecars are left out: the kubelet stops them only after every regular
// container has exited, so waiting for them would wait for ourselves.
func stillRunning(p *pod, sidecars []sidecar) []string {
	var out []string
	for _, s := range sidecars {
		if s.native {
			continue
		}
		if st := p.status(s); st == nil || st.State.Terminated == nil {
			out = append(out, s.name)
		}
	}
	return out
}

// notExitedSince lists the regular sidecars that have not exited since
// shutdown began at start, when the Pod's state was before (nil if
// unknown). A sidecar has exited when it shows state.terminated, or when the
// kubelet has restarted it since (under OnFailure or Always it may do so at
// once, and the status goes back to running): its restartCount grew, or its
// lastState.terminated ended after start. Native sidecars are left out, as
// in stillRunning.
func notExitedSince(now, before *pod, sidecars []sidecar, start time.Time) []string {
	// finishedAt has whole seconds: an exit in start's second counts.
	from := start.Truncate(time.Second)
	var out []string
	for _, s := range sidecars {
		if s.native {
			continue
		}
		st := now.status(s)
		switch {
		case st == nil:
		case st.State.Terminated != nil:
			continue
		case st.RestartCount > restartCount(before, s):
			continue
		case st.LastState.Terminated != nil:
			if t, err := time.Parse(time.RFC3339, st.LastState.Terminated.FinishedAt); err == nil && !t.Before(from) {
				continue
			}
		}
		out = append(out, s.name)
	}
	return out
}

func restartCount(p *pod, s sidecar) int {
	if p == nil {
		return 0
	}
	if st := p.status(s); st != nil {
		return st.RestartCount
	}
	return 0
}

// ownRestartPolicy is the restart policy of proa's own container: its own
// when set, else the Pod's.
func ownRestartPolicy(p *pod, self string) string {
	for _, c := range p.Spec.Containers {
		if c.Name == self && c.RestartPolicy != "" {
			return c.RestartPolicy
		}
	}
	return p.Spec.RestartPolicy
}

// deletion tells whether the Pod is being deleted, and when the deletion
// is due: its deletionTimestamp, the end of the grace period the kubelet
// gives it (zero if unreadable).
func (p *pod) deletion() (due time.Time, deleting bool) {
	if p == nil || p.Metadata.DeletionTimestamp == "" {
		return time.Time{}, false
	}
	due, _ = time.Parse(time.RFC3339, p.Metadata.DeletionTimestamp)
	return due, true
}

// ownContainer decides which container proa runs in: the one named by
// --container or PROA_CONTAINER_NAME, else the one the kubelet's mounts
// reveal, else the first. rule says which of these chose it.
func ownContainer(p *pod, c *config, mountinfo string) (name, rule string, err error) {
	has := func(n string) bool {
		return slices.ContainsFunc(p.Spec.Containers, func(c containerSpec) bool { return c.Name == n })
	}
	if c.container != "" {
		if !has(c.container) {
			return "", "", fmt.Errorf("%s names container %q, but Pod %s/%s has only %s", c.containerFrom, c.container,
				p.Metadata.Namespace, p.Metadata.Name, names(p.Spec.Containers, func(c containerSpec) string { return c.Name }))
		}
		return c.container, c.containerFrom, nil
	}
	if n := containerFromMountinfo(mountinfo, p.Metadata.UID); n != "" && has(n) {
		return n, "mountinfo", nil
	}
	if len(p.Spec.Containers) == 0 {
		return "", "", fmt.Errorf("pod %s/%s has no containers", p.Metadata.Namespace, p.Metadata.Name)
	}
	return p.Spec.Containers[0].Name, "first container", nil
}
