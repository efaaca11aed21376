package kubelet

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"proa/e2e/cluster"
)

// ServiceAccountPath is where proa reads its credentials, inside the Pod.
const ServiceAccountPath = "/var/run/secrets/kubernetes.io/serviceaccount"

// writeServiceAccount (re)writes the service-account volume the way the
// kubelet's atomic writer does: the files live in a timestamped directory,
// "..data" links to it and token, ca.crt and namespace link through
// "..data", so an update is one rename of the "..data" link.
func (p *Pod) writeServiceAccount(token string) error {
	dir := p.saDir
	ts := filepath.Join(dir, time.Now().UTC().Format("..2006_01_02_15_04_05.000000000"))
	if err := os.Mkdir(ts, 0o755); err != nil {
		return err
	}
	files := map[string][]byte{"token": []byte(token), "ca.crt": p.cl.CAPEM, "namespace": []byte(p.Namespace)}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(ts, name), data, 0o644); err != nil {
			return err
		}
	}
	old, _ := os.Readlink(filepath.Join(dir, "..data"))
	tmp := filepath.Join(dir, "..data_tmp")
	os.Remove(tmp)
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		return err
	}
	for name := range files {
		link := filepath.Join(dir, name)
		if _, err := os.Lstat(link); os.IsNotExist(err) {
			if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
				return err
			}
		}
	}
	if old != "" {
		os.RemoveAll(filepath.Join(dir, old))
	}
	p.mu.Lock()
	p.tokens = append(p.tokens, token)
	p.mu.Unlock()
	return nil
}

// Token returns the token currently in the service-account volume.
func (p *Pod) Token() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.tokens[len(p.tokens)-1]
}

// RotateToken requests a new token bound to the Pod and writes it into the
// service-account volume, as the kubelet does before the old one expires.
func (p *Pod) RotateToken(ctx context.Context) error {
	tok, err := p.cl.RequestToken(ctx, p.Namespace, p.Spec.ServiceAccount,
		cluster.BoundObject{Kind: "Pod", Name: p.Name, UID: p.UID})
	if err != nil {
		return err
	}
	if err := p.writeServiceAccount(tok); err != nil {
		return err
	}
	p.event("kubelet", "service-account token rotated", nil)
	return nil
}

// RevokeFirstToken invalidates the Pod's first token (the Pod needs
// TokenBoundToSecret): it deletes the Secret the token is bound to and waits
// until the API server answers 401 to it.
func (p *Pod) RevokeFirstToken(ctx context.Context) error {
	if p.secret == "" {
		return fmt.Errorf("RevokeFirstToken needs PodSpec.TokenBoundToSecret")
	}
	p.mu.Lock()
	first := p.tokens[0]
	p.mu.Unlock()
	if err := p.cl.DeleteSecret(ctx, p.Namespace, p.secret); err != nil {
		return err
	}
	for {
		err := p.cl.TokenWorks(ctx, first)
		if cluster.IsCode(err, 401) {
			p.event("test", "first token revoked (API server answers 401)", nil)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the first token still works after its Secret was deleted (last answer: %v)", err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// recreateServiceAccount deletes the Pod's ServiceAccount and creates it
// again (same name, new UID), then waits until the API server refuses tok,
// which was issued to the old one.
func (p *Pod) recreateServiceAccount(ctx context.Context, tok string) error {
	path := "/api/v1/namespaces/" + p.Namespace + "/serviceaccounts/" + p.Spec.ServiceAccount
	if err := p.cl.Do(ctx, "DELETE", path, nil, nil); err != nil {
		return err
	}
	for {
		err := p.cl.CreateServiceAccount(ctx, p.Namespace, p.Spec.ServiceAccount)
		if err == nil {
			break
		}
		if !cluster.IsCode(err, 409) { // 409: the old one is still being deleted
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	for {
		err := p.cl.TokenWorks(ctx, tok)
		if cluster.IsCode(err, 401) {
			p.event("kubelet", "service account recreated: the Pod's token is refused (401)", nil)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the token still works after its ServiceAccount was recreated (last answer: %v)", err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// WriteCA writes the cluster's current CA (Cluster.CAPEM) into the Pod's
// service-account volume, as the kubelet does when the kube-root-ca.crt
// ConfigMap changes.
func (p *Pod) WriteCA() error {
	if err := p.writeServiceAccount(p.Token()); err != nil {
		return err
	}
	p.event("kubelet", "ca.crt updated", nil)
	return nil
}
