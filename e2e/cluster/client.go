package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// APIError is a non-2xx answer of the API server.
type APIError struct {
	Code    int
	Reason  string
	Message string
	Body    string
}

func (e *APIError) Error() string {
	if e.Message != "" {
		return fmt.Sprintf("HTTP %d %s: %s", e.Code, e.Reason, e.Message)
	}
	return fmt.Sprintf("HTTP %d: %s", e.Code, e.Body)
}

// IsCode reports whether err is an APIError with that HTTP status.
func IsCode(err error, code int) bool {
	e, ok := err.(*APIError)
	return ok && e.Code == code
}

// Request is one call to the API server.
type Request struct {
	Method      string
	Path        string // with query
	Body        any    // []byte sent as is, anything else JSON-encoded
	ContentType string // default application/json
	Token       string // default the admin token
	Out         any    // JSON-decoded response, if non-nil
}

// Do sends a request as admin; body may be nil, []byte or a value to encode
// as JSON; out, if non-nil, receives the decoded JSON response.
func (c *Cluster) Do(ctx context.Context, method, path string, body, out any) error {
	return c.Send(ctx, Request{Method: method, Path: path, Body: body, Out: out})
}

// Send sends r. Requests without a deadline get one of 30 s.
func (c *Cluster) Send(ctx context.Context, r Request) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	var rd io.Reader
	switch b := r.Body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, c.URL+r.Path, rd)
	if err != nil {
		return err
	}
	ct := r.ContentType
	if ct == "" {
		ct = "application/json"
	}
	if rd != nil {
		req.Header.Set("Content-Type", ct)
	}
	req.Header.Set("Accept", "application/json")
	tok := r.Token
	if tok == "" {
		tok = c.AdminToken
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := c.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		e := &APIError{Code: resp.StatusCode, Body: strings.TrimSpace(string(data))}
		var st struct{ Reason, Message string }
		if json.Unmarshal(data, &st) == nil {
			e.Reason, e.Message = st.Reason, st.Message
		}
		return e
	}
	if r.Out != nil {
		return json.Unmarshal(data, r.Out)
	}
	return nil
}

// Obj is a loosely typed Kubernetes object.
type Obj = map[string]any

func meta(name string) Obj { return Obj{"name": name} }

// CreateNamespace creates a namespace.
func (c *Cluster) CreateNamespace(ctx context.Context, name string) error {
	return c.Do(ctx, "POST", "/api/v1/namespaces", Obj{"apiVersion": "v1", "kind": "Namespace", "metadata": meta(name)}, nil)
}

// CreateServiceAccount creates a ServiceAccount.
func (c *Cluster) CreateServiceAccount(ctx context.Context, ns, name string) error {
	return c.Do(ctx, "POST", "/api/v1/namespaces/"+ns+"/serviceaccounts",
		Obj{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(name)}, nil)
}

// GrantPods creates Role NAME allowing verbs on pods and binds it to the
// ServiceAccount sa.
func (c *Cluster) GrantPods(ctx context.Context, ns, name, sa string, verbs []string) error {
	role := Obj{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta(name),
		"rules": []Obj{{"apiGroups": []string{""}, "resources": []string{"pods"}, "verbs": verbs}}}
	if err := c.Do(ctx, "POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/"+ns+"/roles", role, nil); err != nil {
		return err
	}
	rb := Obj{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta(name),
		"roleRef":  Obj{"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
		"subjects": []Obj{{"kind": "ServiceAccount", "name": sa, "namespace": ns}}}
	return c.Do(ctx, "POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/"+ns+"/rolebindings", rb, nil)
}

// BoundObject is what a TokenRequest binds a token to (a Pod or a Secret).
type BoundObject struct {
	Kind, Name, UID string
}

// RequestToken issues a service-account token for sa bound to obj, as the
// kubelet does for a projected token volume (audience
// https://kubernetes.default.svc, 3607 s).
func (c *Cluster) RequestToken(ctx context.Context, ns, sa string, obj BoundObject) (string, error) {
	tr := Obj{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": Obj{
		"audiences":         []string{"https://kubernetes.default.svc"},
		"expirationSeconds": 3607,
		"boundObjectRef":    Obj{"apiVersion": "v1", "kind": obj.Kind, "name": obj.Name, "uid": obj.UID},
	}}
	var out struct {
		Status struct{ Token string }
	}
	if err := c.Do(ctx, "POST", "/api/v1/namespaces/"+ns+"/serviceaccounts/"+sa+"/token", tr, &out); err != nil {
		return "", err
	}
	return out.Status.Token, nil
}

// TokenWorks reports whether the API server accepts token (a
// SelfSubjectReview): nil if it does, an *APIError (401) if not.
func (c *Cluster) TokenWorks(ctx context.Context, token string) error {
	return c.Send(ctx, Request{Method: "POST", Path: "/apis/authentication.k8s.io/v1/selfsubjectreviews",
		Body: Obj{"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}, Token: token})
}

// CreateSecret creates an empty Opaque Secret and returns its UID.
func (c *Cluster) CreateSecret(ctx context.Context, ns, name string) (string, error) {
	var out struct{ Metadata struct{ UID string } }
	err := c.Do(ctx, "POST", "/api/v1/namespaces/"+ns+"/secrets",
		Obj{"apiVersion": "v1", "kind": "Secret", "metadata": meta(name), "type": "Opaque"}, &out)
	return out.Metadata.UID, err
}

// DeleteSecret deletes a Secret.
func (c *Cluster) DeleteSecret(ctx context.Context, ns, name string) error {
	return c.Do(ctx, "DELETE", "/api/v1/namespaces/"+ns+"/secrets/"+name, nil, nil)
}

// CreatePod creates a Pod from its JSON form and returns its UID.
func (c *Cluster) CreatePod(ctx context.Context, ns string, pod Obj) (string, error) {
	var out struct{ Metadata struct{ UID string } }
	err := c.Do(ctx, "POST", "/api/v1/namespaces/"+ns+"/pods", pod, &out)
	return out.Metadata.UID, err
}

// PatchPodStatus merge-patches the Pod's status subresource, as the kubelet
// does.
func (c *Cluster) PatchPodStatus(ctx context.Context, ns, name string, status Obj) error {
	return c.Send(ctx, Request{Method: "PATCH", Path: "/api/v1/namespaces/" + ns + "/pods/" + name + "/status",
		Body: Obj{"status": status}, ContentType: "application/merge-patch+json"})
}

// GetPod reads a Pod.
func (c *Cluster) GetPod(ctx context.Context, ns, name string) (Obj, error) {
	var out Obj
	err := c.Do(ctx, "GET", "/api/v1/namespaces/"+ns+"/pods/"+name, nil, &out)
	return out, err
}

// Resource finds the plural resource name for apiVersion+kind through
// discovery, and whether it is namespaced.
func (c *Cluster) Resource(ctx context.Context, apiVersion, kind string) (plural string, namespaced bool, err error) {
	path := "/apis/" + apiVersion
	if !strings.Contains(apiVersion, "/") {
		path = "/api/" + apiVersion
	}
	var list struct {
		Resources []struct {
			Name, Kind string
			Namespaced bool
		}
	}
	if err := c.Do(ctx, "GET", path, nil, &list); err != nil {
		return "", false, err
	}
	for _, r := range list.Resources {
		if r.Kind == kind && !strings.Contains(r.Name, "/") {
			return r.Name, r.Namespaced, nil
		}
	}
	return "", false, fmt.Errorf("no resource of kind %s in %s", kind, apiVersion)
}

// CreatePath is the collection path for creating objects of a resource.
func CreatePath(apiVersion, plural, ns string) string {
	p := "/apis/" + apiVersion
	if !strings.Contains(apiVersion, "/") {
		p = "/api/" + apiVersion
	}
	if ns != "" {
		p += "/namespaces/" + url.PathEscape(ns)
	}
	return p + "/" + plural
}
