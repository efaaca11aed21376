package kubelet

import (
	"strconv"
	"strings"
	"time"

	"proa/e2e/cluster"
)

// PodSpec describes a Pod to run: its namespace, RBAC and containers.
type PodSpec struct {
	Name      string // required
	Namespace string // default: "ns-" + Name; created with the Pod
	// ServiceAccount is proa's ServiceAccount, created with the Pod.
	// Default "proa".
	ServiceAccount string
	// PodVerbs are the verbs a Role grants the ServiceAccount on pods. nil
	// means get, list, watch (the Role Rust-proa's README asks for).
	PodVerbs []string
	// NoRBAC creates no Role or RoleBinding: every request is forbidden.
	NoRBAC bool
	// RestartPolicy: Never (default), OnFailure or Always.
	RestartPolicy string
	// TerminationGracePeriodSeconds, if > 0, is set on the Pod.
	TerminationGracePeriodSeconds int
	// TokenBoundToSecret binds the first token to a Secret instead of the
	// Pod, so that Pod.RevokeFirstToken can invalidate it (deleting the
	// Secret) while the Pod keeps running.
	TokenBoundToSecret bool
	// RecreateServiceAccount deletes and recreates the ServiceAccount after
	// the Pod's token was issued, before any container starts: the API
	// server then refuses the token (401) for good, as after a
	// ServiceAccount was recreated under a running Pod.
	RecreateServiceAccount bool
	// ShareProcessNamespace puts every container in one PID namespace whose
	// PID 1 is a pause process (spec.shareProcessNamespace), so proa can
	// signal sidecars by name (-k) or all (-K). proa's container mounts its
	// own /proc.
	ShareProcessNamespace bool
	// InitContainers may only hold native sidecars (RestartPolicy "Always").
	InitContainers []Container
	Containers     []Container
}

// Container is one container of the Pod: exactly one of Sidecar or Proa.
type Container struct {
	Name          string
	RestartPolicy string // "Always" makes an init container a native sidecar
	Sidecar       *Sidecar
	Proa          *Proa
}

// Sidecar is a simulated sidecar: an HTTP server on its own loopback port
// with GET /ready (its readinessProbe), GET|POST /quit (exit after a
// response), POST /control?ready=true|false and GET /live.
type Sidecar struct {
	ReadyAfter time.Duration // /ready answers 200 this long after start
	NeverReady bool          // /ready answers 503 until SetReady(true)
	NoProbe    bool          // no readinessProbe: ready as soon as running
	ExitAfter  time.Duration // if > 0, exit on its own after this long ...
	ExitCode   int           // ... with this code
	QuitCode   int           // exit code after a /quit request
	QuitDelay  time.Duration // time between a /quit request and exiting
	TermCode   int           // exit code on SIGTERM
	// TermDelay is the time between the first SIGTERM/SIGINT and exiting.
	// Every signal the sidecar receives is recorded as a "signal" event, so
	// a delay shows repeated signals.
	TermDelay time.Duration
	// Executable, if set, is the base name of the sidecar's executable (a
	// hard link to the harness binary), as proa's -k NAME sees it in
	// /proc/PID/exe.
	Executable string
	// ProxyAPI makes the sidecar also forward TCP connections from a port
	// of its own to the API server, as a service mesh's proxy carries the
	// Pod's outbound traffic: proa's API connection dies with the sidecar
	// (see Proa.APIVia). Not with ShareProcessNamespace.
	ProxyAPI bool
}

// Proa is proa's own container: proa runs in private mount and UTS
// namespaces with the service-account volume at its real path.
type Proa struct {
	Args    []string          // proa's flags (placed before "--")
	Command []string          // the command; see App
	Env     map[string]string // extra environment (e.g. POD_NAME)
	// Hostname is the container's hostname; default the Pod name.
	Hostname string
	// NoTerminationLog leaves out the kubelet-style termination-log mount
	// (whose source path names the Pod UID and container).
	NoTerminationLog bool
	// APIAddress, if set (HOST:PORT), is the API server's address proa is
	// given instead of the cluster's, e.g. a proxy in front of it.
	APIAddress string
	// PIDNamespace gives proa a new PID namespace (proa is PID 1) with its
	// own /proc.
	PIDNamespace bool
	// APIVia names a ProxyAPI sidecar: proa reaches the API server through
	// it (KUBERNETES_SERVICE_PORT is the sidecar's proxy port).
	APIVia string
}

// URLOf, used as (part of) an argument in Proa.Args or Proa.Command, stands
// for the URL of path on sidecar name's HTTP server, e.g.
// "--shutdown-http-post=" + URLOf("envoy", "/quit"). (The port is chosen when
// the Pod is created.)
func URLOf(name, path string) string { return "@{" + name + "}" + path }

// expand replaces URLOf markers in arg.
func (p *Pod) expand(arg string) string {
	for _, c := range p.containers {
		if c.port != 0 {
			arg = strings.ReplaceAll(arg, "@{"+c.spec.Name+"}", "http://127.0.0.1:"+itoa(c.port))
		}
	}
	return arg
}

func (p *Pod) expandAll(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = p.expand(a)
	}
	return out
}

// AppMarker in a Proa.Command stands for the harness's test application.
const AppMarker = "@app"

// App is a command line running the harness's test application with these
// actions, done in order:
//
//	print TEXT      print TEXT on stdout
//	sleep DURATION  sleep
//	exit N          exit with code N
//	kill SIG        send itself SIG (KILL, TERM, INT, HUP, QUIT, USR1, USR2 or a number)
//	trap SIG N      from now on, on SIG exit with code N
//	wait-file PATH  wait until PATH exists
//	fail-once PATH N  exit with code N unless PATH exists, creating it (the
//	                first run of a retried container fails)
//	ps              record a "ps" event: every PID in /proc with its executable's base name
//
// It exits 0 after the last action. It records "started", "signal" and
// "exiting" events.
func App(actions ...string) []string {
	return append([]string{AppMarker}, actions...)
}

func (s *PodSpec) defaults() {
	if s.Namespace == "" {
		s.Namespace = "ns-" + s.Name
	}
	if s.ServiceAccount == "" {
		s.ServiceAccount = "proa"
	}
	if s.PodVerbs == nil {
		s.PodVerbs = []string{"get", "list", "watch"}
	}
	if s.RestartPolicy == "" {
		s.RestartPolicy = "Never"
	}
}

// manifest is the Pod object as a user would write it.
func (p *Pod) manifest() cluster.Obj {
	s := p.Spec
	var inits, mains []cluster.Obj
	for _, c := range p.containers {
		m := cluster.Obj{"name": c.spec.Name, "imagePullPolicy": "IfNotPresent"}
		switch {
		case c.spec.Proa != nil:
			pr := c.spec.Proa
			m["image"] = "proa-e2e/app:test"
			m["command"] = []string{"/proa"}
			args := p.expandAll(append(append(append([]string{}, pr.Args...), "--"), pr.Command...))
			for i, a := range args {
				if a == AppMarker {
					args[i] = "/usr/local/bin/app"
				}
			}
			m["args"] = args
			var env []cluster.Obj
			for _, k := range sortedKeys(pr.Env) {
				env = append(env, cluster.Obj{"name": k, "value": pr.Env[k]})
			}
			if env != nil {
				m["env"] = env
			}
		case c.spec.Sidecar != nil:
			m["image"] = "proa-e2e/sidecar:test"
			m["ports"] = []cluster.Obj{{"containerPort": c.port, "name": "http"}}
			if !c.spec.Sidecar.NoProbe {
				m["readinessProbe"] = cluster.Obj{
					"httpGet":          cluster.Obj{"path": "/ready", "port": c.port},
					"periodSeconds":    1,
					"failureThreshold": 3,
				}
			}
		}
		if c.native {
			m["restartPolicy"] = "Always"
			inits = append(inits, m)
		} else {
			mains = append(mains, m)
		}
	}
	spec := cluster.Obj{
		"nodeName":                     "e2e-node",
		"serviceAccountName":           s.ServiceAccount,
		"automountServiceAccountToken": false,
		"restartPolicy":                s.RestartPolicy,
		"containers":                   mains,
	}
	if s.ShareProcessNamespace {
		spec["shareProcessNamespace"] = true
	}
	if inits != nil {
		spec["initContainers"] = inits
	}
	if s.TerminationGracePeriodSeconds > 0 {
		spec["terminationGracePeriodSeconds"] = s.TerminationGracePeriodSeconds
	}
	return cluster.Obj{
		"apiVersion": "v1",
		"kind":       "Pod",
		"metadata":   cluster.Obj{"name": s.Name, "namespace": s.Namespace, "labels": cluster.Obj{"app": "proa-e2e"}},
		"spec":       spec,
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
