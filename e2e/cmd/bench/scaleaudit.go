package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"proa/e2e/cluster"
)

// auditTail reads the API server's audit log incrementally (the scale run
// polls it while a thousand waiters reconnect, and the log grows to tens of
// megabytes), keeping one record per request of one user: its latest stage.
type auditTail struct {
	path, user string
	off        int64
	byID       map[string]int // index in reqs
	reqs       []cluster.AuditEvent
}

func newAuditTail(path, user string) *auditTail {
	return &auditTail{path: path, user: user, byID: map[string]int{}}
}

// read reads what was appended since the last call and returns every
// request so far, in arrival order.
func (a *auditTail) read() ([]cluster.AuditEvent, error) {
	f, err := os.Open(a.path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.Seek(a.off, io.SeekStart); err != nil {
		return nil, err
	}
	r := bufio.NewReaderSize(f, 1<<20)
	for {
		line, err := r.ReadBytes('\n')
		if err == io.EOF {
			break // a partial last line is read again next time
		} else if err != nil {
			return nil, err
		}
		a.off += int64(len(line))
		if !strings.Contains(string(line), a.user) {
			continue
		}
		var ev cluster.AuditEvent
		if json.Unmarshal(line, &ev) != nil || ev.User.Username != a.user {
			continue
		}
		if i, ok := a.byID[ev.AuditID]; ok {
			if a.reqs[i].Stage != "ResponseComplete" {
				a.reqs[i] = ev
			}
			continue
		}
		a.byID[ev.AuditID] = len(a.reqs)
		a.reqs = append(a.reqs, ev)
	}
	out := slices.Clone(a.reqs)
	slices.SortStableFunc(out, func(x, y cluster.AuditEvent) int { return x.RequestReceived.Compare(y.RequestReceived) })
	return out, nil
}

// auditPod is the Pod a request was about: the metadata.name field selector
// of a list or watch, or the name in a get's path.
func auditPod(r cluster.AuditEvent) string {
	u, err := url.Parse(r.RequestURI)
	if err != nil {
		return ""
	}
	if fs := u.Query().Get("fieldSelector"); fs != "" {
		for _, term := range strings.Split(fs, ",") {
			if v, ok := strings.CutPrefix(term, "metadata.name="); ok {
				return v
			}
		}
	}
	if _, name, ok := strings.Cut(u.Path, "/pods/"); ok {
		name, _, _ = strings.Cut(name, "/")
		return name
	}
	return ""
}

// resumes tells whether a watch request resumes from a resourceVersion
// (rather than starting from the current state: none, or "0").
func resumes(r cluster.AuditEvent) bool {
	rv := queryOf(r).Get("resourceVersion")
	return rv != "" && rv != "0"
}

// between returns the requests received in [from, to).
func between(reqs []cluster.AuditEvent, from, to time.Time) []cluster.AuditEvent {
	var out []cluster.AuditEvent
	for _, r := range reqs {
		if !r.RequestReceived.Before(from) && r.RequestReceived.Before(to) {
			out = append(out, r)
		}
	}
	return out
}

// verbCounts counts requests by verb, and by verb and answer for the
// answers other than 200 ("watch 429").
func verbCounts(reqs []cluster.AuditEvent) map[string]int {
	n := map[string]int{}
	for _, r := range reqs {
		n[r.Verb]++
		if r.ResponseStatus.Code != 200 {
			n[r.Verb+" "+strconv.Itoa(r.ResponseStatus.Code)]++
		}
	}
	return n
}

// perSecond counts requests in one-second bins from t0 on: bins[i] holds
// those received in [t0+i s, t0+i+1 s).
func perSecond(reqs []cluster.AuditEvent, t0 time.Time, seconds int) []int {
	bins := make([]int, seconds)
	for _, r := range reqs {
		i := int(r.RequestReceived.Sub(t0) / time.Second)
		if r.RequestReceived.Before(t0) || i >= seconds {
			continue
		}
		bins[i]++
	}
	return bins
}
