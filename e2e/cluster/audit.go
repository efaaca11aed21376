package cluster

import (
	"bufio"
	"encoding/json"
	"os"
	"sort"
	"time"
)

// AuditEvent is one line of the audit log (level Metadata).
type AuditEvent struct {
	AuditID    string `json:"auditID"`
	Stage      string `json:"stage"`
	Verb       string `json:"verb"`
	RequestURI string `json:"requestURI"`
	User       struct {
		Username string `json:"username"`
	} `json:"user"`
	UserAgent      string `json:"userAgent"`
	ResponseStatus struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
	RequestReceived time.Time `json:"requestReceivedTimestamp"`
	StageTimestamp  time.Time `json:"stageTimestamp"`
}

// ServiceAccountUser is the user name of a service account.
func ServiceAccountUser(ns, sa string) string {
	return "system:serviceaccount:" + ns + ":" + sa
}

// AuditRequests reads the audit log and returns the requests made by user,
// one entry per request (its latest stage: ResponseComplete once the request
// finished, ResponseStarted for a watch still open), in arrival order. The
// log records every request of every service account (policy: Metadata for
// group system:serviceaccounts), whether or not it was allowed.
func (c *Cluster) AuditRequests(user string) ([]AuditEvent, error) {
	f, err := os.Open(c.AuditLog)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	byID := map[string]AuditEvent{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var ev AuditEvent
		if json.Unmarshal(sc.Bytes(), &ev) != nil || ev.User.Username != user {
			continue
		}
		if prev, ok := byID[ev.AuditID]; ok && prev.Stage == "ResponseComplete" {
			continue
		}
		byID[ev.AuditID] = ev
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	out := make([]AuditEvent, 0, len(byID))
	for _, ev := range byID {
		out = append(out, ev)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].RequestReceived.Before(out[j].RequestReceived) })
	return out, nil
}
