// Package cluster runs a real kube-apiserver and etcd on loopback for tests:
// generated certificates, an admin token, a service-account signing key, RBAC
// and an audit log of every request a service account makes.
package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"proa/e2e/proc"
)

// Options configure Start.
type Options struct {
	Dir string    // working directory (certificates, data, logs); must exist
	Bin Binaries  // from EnsureBinaries
	Log io.Writer // progress lines; nil for none
	Env []string  // extra environment for both servers
	// Address is where kube-apiserver listens and what it advertises (the
	// endpoint of the "kubernetes" Service); default 127.0.0.1. Its serving
	// certificate has IP SANs for 127.0.0.1, Address and ServiceIP.
	Address string
	// ServiceAccountAdmission keeps the ServiceAccount admission plugin,
	// which gives Pods their projected service-account volume: a real
	// kubelet needs it. Without it (the simulated kubelet's suite) the
	// plugin is disabled.
	ServiceAccountAdmission bool
	// StaticUsers get a static bearer token each (Cluster.Tokens), e.g. a
	// kubelet's identity.
	StaticUsers []StaticUser
	// ExtraArgs are appended last to kube-apiserver's command line, so they
	// win over the defaults (e.g. --feature-gates=WatchList=false,
	// --disable-http2-serving).
	ExtraArgs []string
	// AuditStatusWrites also records every Pod status write in the audit
	// log (the scale benchmark's reference for "status written"). Off for
	// the tests: the blocking audit write delays the PATCH's answer, so
	// the waiters would hear of a status well before its writer did.
	AuditStatusWrites bool
}

// StaticUser is a user of the token-auth file.
type StaticUser struct {
	Name   string
	Groups []string
}

// ServiceIP is the ClusterIP of the "kubernetes" Service: the first address
// of the service range.
const ServiceIP = "10.0.0.1"

// Cluster is a running etcd + kube-apiserver pair.
type Cluster struct {
	URL        string // https://127.0.0.1:PORT
	Host       string // 127.0.0.1
	Port       int
	CAPEM      []byte // the CA that signed the serving certificate
	AdminToken string // a system:masters static token
	// Tokens maps each of Options.StaticUsers to its bearer token.
	Tokens   map[string]string
	AuditLog string // path of the audit log (service-account requests; Options.AuditStatusWrites)
	Dir      string

	opts      Options
	pki       *pki
	etcdPort  int
	peerPort  int
	etcd      *server
	apiserver *server
	client    *http.Client
}

type server struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

// auditPolicy records every request of a service account.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  userGroups: ["system:serviceaccounts"]
- level: None
`

// auditStatusWrites is the rule Options.AuditStatusWrites adds.
const auditStatusWrites = `- level: Metadata
  verbs: ["patch"]
  resources: [{group: "", resources: ["pods/status"]}]
`

// Start starts etcd and kube-apiserver and waits until /readyz answers 200.
// On error everything already started is stopped.
func Start(ctx context.Context, opts Options) (c *Cluster, err error) {
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	if opts.Address == "" {
		opts.Address = "127.0.0.1"
	}
	c = &Cluster{Dir: opts.Dir, opts: opts, Host: opts.Address}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	sans := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(ServiceIP)}
	if ip := net.ParseIP(opts.Address); ip != nil && !ip.IsLoopback() {
		sans = append(sans, ip)
	}
	if c.pki, err = writePKI(opts.Dir, sans, opts.StaticUsers); err != nil {
		return nil, err
	}
	c.CAPEM, c.AdminToken, c.Tokens = c.pki.caPEM, c.pki.adminToken, c.pki.userTokens
	c.AuditLog = filepath.Join(opts.Dir, "audit.log")
	policy := auditPolicy
	if opts.AuditStatusWrites {
		policy = strings.Replace(policy, "- level: None\n", auditStatusWrites+"- level: None\n", 1)
	}
	if err := os.WriteFile(filepath.Join(opts.Dir, "audit-policy.yaml"), []byte(policy), 0o644); err != nil {
		return nil, err
	}
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	c.etcdPort, c.peerPort, c.Port = ports[0], ports[1], ports[2]
	c.URL = "https://" + net.JoinHostPort(c.Host, strconv.Itoa(c.Port))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.CAPEM)
	pool.AppendCertsFromPEM(c.pki.nextCAPEM) // the harness trusts the CA after RotateServingCA too
	c.client = &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2: true,
		MaxIdleConns:      20,
		IdleConnTimeout:   30 * time.Second,
	}}

	start := time.Now()
	if err := c.startEtcd(ctx); err != nil {
		return nil, err
	}
	etcdReady := time.Now()
	if err := c.StartAPIServer(ctx); err != nil {
		return nil, err
	}
	fmt.Fprintf(opts.Log, "proa-e2e: etcd %s ready in %s, kube-apiserver %s ready at %s in %s\n",
		EtcdVersion, etcdReady.Sub(start).Round(time.Millisecond), KubeVersion, c.URL, time.Since(etcdReady).Round(time.Millisecond))
	return c, nil
}

func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func (c *Cluster) startServer(name string, args []string) (*server, error) {
	logPath := filepath.Join(c.Dir, name+".log")
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Env = append(os.Environ(), c.opts.Env...)
	cmd.Dir = c.Dir
	if err := proc.Start(cmd); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	s := &server{name: name, cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() { cmd.Wait(); close(s.done) }()
	return s, nil
}

func (c *Cluster) startEtcd(ctx context.Context) error {
	u := func(p int) string { return "http://127.0.0.1:" + strconv.Itoa(p) }
	s, err := c.startServer("etcd", []string{c.opts.Bin.Etcd,
		"--name=proa-e2e",
		"--data-dir=" + filepath.Join(c.Dir, "etcd-data"),
		"--listen-client-urls=" + u(c.etcdPort),
		"--advertise-client-urls=" + u(c.etcdPort),
		"--listen-peer-urls=" + u(c.peerPort),
		"--initial-advertise-peer-urls=" + u(c.peerPort),
		"--initial-cluster=proa-e2e=" + u(c.peerPort),
		"--log-level=warn",
	})
	if err != nil {
		return err
	}
	c.etcd = s
	return c.waitHealthy(ctx, s, 60*time.Second, func(ctx context.Context) bool {
		req, _ := http.NewRequestWithContext(ctx, "GET", u(c.etcdPort)+"/health", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == 200 && strings.Contains(string(b), `"true"`)
	})
}

// StartAPIServer starts kube-apiserver (again, after StopAPIServer) on the
// same port and waits for /readyz.
func (c *Cluster) StartAPIServer(ctx context.Context) error {
	if c.apiserver != nil {
		select {
		case <-c.apiserver.done:
		default:
			return errors.New("kube-apiserver is already running")
		}
	}
	args := []string{c.opts.Bin.APIServer,
		"--etcd-servers=http://127.0.0.1:" + strconv.Itoa(c.etcdPort),
		"--bind-address=" + c.Host,
		"--advertise-address=" + c.Host,
		"--secure-port=" + strconv.Itoa(c.Port),
		"--tls-cert-file=" + c.pki.servingCert,
		"--tls-private-key-file=" + c.pki.servingKey,
		"--client-ca-file=" + c.pki.caCert,
		"--token-auth-file=" + c.pki.tokens,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + c.pki.saPub,
		"--service-account-signing-key-file=" + c.pki.saKey,
		"--authorization-mode=RBAC",
		"--service-cluster-ip-range=10.0.0.0/24",
		"--audit-policy-file=" + filepath.Join(c.Dir, "audit-policy.yaml"),
		"--audit-log-path=" + c.AuditLog,
		"--audit-log-mode=blocking",
		"--profiling=false",
		// Bound the graceful shutdown (open watches would otherwise hold it for
		// the 60 s request timeout); new requests meanwhile get 429 + Retry-After.
		"--shutdown-send-retry-after=true",
	}
	if !c.opts.ServiceAccountAdmission {
		args = append(args, "--disable-admission-plugins=ServiceAccount")
	}
	s, err := c.startServer("kube-apiserver", append(args, c.opts.ExtraArgs...))
	if err != nil {
		return err
	}
	c.apiserver = s
	return c.waitHealthy(ctx, s, 120*time.Second, func(ctx context.Context) bool {
		return c.Do(ctx, "GET", "/readyz", nil, nil) == nil
	})
}

// StopAPIServer stops kube-apiserver (SIGTERM to the PID this harness
// started, SIGKILL after 30 s). etcd keeps running.
func (c *Cluster) StopAPIServer() error {
	if c.apiserver == nil {
		return nil
	}
	return proc.Stop(c.apiserver.cmd.Process, c.apiserver.done, 30*time.Second)
}

// RestartAPIServer stops kube-apiserver and starts it again on the same
// port, with the same keys and etcd data; it returns once /readyz answers.
func (c *Cluster) RestartAPIServer(ctx context.Context) error {
	if err := c.StopAPIServer(); err != nil {
		return err
	}
	return c.StartAPIServer(ctx)
}

// RotateServingCA stops kube-apiserver and starts it again with a serving
// certificate from a new CA, as after a rotation of the cluster CA; CAPEM
// becomes the new CA (Pods written from then on trust it). It can be done
// once.
func (c *Cluster) RotateServingCA(ctx context.Context) error {
	if c.pki.nextCAPEM == nil {
		return errors.New("the serving CA was rotated already")
	}
	if err := c.StopAPIServer(); err != nil {
		return err
	}
	if err := os.WriteFile(c.pki.servingCert, c.pki.nextServingPEM, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(c.pki.servingKey, c.pki.nextServingKeyPEM, 0o600); err != nil {
		return err
	}
	c.CAPEM, c.pki.nextCAPEM = c.pki.nextCAPEM, nil
	return c.StartAPIServer(ctx)
}

// Stop stops kube-apiserver and etcd. It does not remove Dir.
func (c *Cluster) Stop() {
	if c.apiserver != nil {
		proc.Stop(c.apiserver.cmd.Process, c.apiserver.done, 30*time.Second)
	}
	if c.etcd != nil {
		proc.Stop(c.etcd.cmd.Process, c.etcd.done, 10*time.Second)
	}
	if c.client != nil {
		c.client.CloseIdleConnections()
	}
}

func (c *Cluster) waitHealthy(ctx context.Context, s *server, limit time.Duration, ok func(context.Context) bool) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		healthy := ok(pctx)
		pcancel()
		if healthy {
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("%s exited during startup (%s); last log lines:\n%s", s.name, s.cmd.ProcessState, tailFile(s.log, 30))
		case <-ctx.Done():
			return fmt.Errorf("%s not healthy after %s; last log lines:\n%s", s.name, limit, tailFile(s.log, 30))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func tailFile(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// APIServerPID is the process ID of the running kube-apiserver, or 0; the
// benchmark reads its /proc.
func (c *Cluster) APIServerPID() int { return pidOf(c.apiserver) }

// EtcdPID is the process ID of the running etcd, or 0.
func (c *Cluster) EtcdPID() int { return pidOf(c.etcd) }

func pidOf(s *server) int {
	if s == nil || s.cmd.Process == nil {
		return 0
	}
	select {
	case <-s.done:
		return 0
	default:
		return s.cmd.Process.Pid
	}
}
