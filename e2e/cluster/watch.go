package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// WatchEvent is one event of a watch stream.
type WatchEvent struct {
	Type   string          // ADDED, MODIFIED, DELETED, BOOKMARK, ERROR
	Object json.RawMessage `json:"object"`
}

// Watch streams the watch at path (e.g.
// /api/v1/namespaces/NS/pods?watch=1&fieldSelector=metadata.name=NAME) as
// admin, calling fn for each event until fn returns false, the stream ends
// (nil) or ctx ends.
func (c *Cluster) Watch(ctx context.Context, path string, fn func(WatchEvent) bool) error {
	req, err := http.NewRequestWithContext(ctx, "GET", c.URL+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.AdminToken)
	resp, err := c.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return &APIError{Code: resp.StatusCode, Body: strings.TrimSpace(string(b))}
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var ev WatchEvent
		if err := dec.Decode(&ev); err == io.EOF {
			return nil
		} else if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("reading watch %s: %w", path, err)
		}
		if !fn(ev) {
			return nil
		}
	}
}
