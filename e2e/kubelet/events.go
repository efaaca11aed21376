package kubelet

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

// Event is one thing that happened in a Pod, from the kubelet, proa (its log
// lines), a sidecar or the test application.
type Event struct {
	Time   time.Time      `json:"t"`
	Source string         `json:"src"`
	Msg    string         `json:"msg"`
	Fields map[string]any `json:"fields,omitempty"`
}

func (e Event) String() string {
	s := e.Msg
	keys := make([]string, 0, len(e.Fields))
	for k := range e.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b, _ := json.Marshal(e.Fields[k])
		s += " " + k + "=" + string(b)
	}
	return s
}

// LogLine is one JSON log line of proa.
type LogLine struct {
	Time  time.Time
	Level string
	Msg   string
	Attrs map[string]any // every key but time, level and msg
	Raw   string
}

// recorder collects a Pod's events: its own in memory, and those the
// sidecar and application processes append to a JSON-lines file.
type recorder struct {
	path string
	k    *Kubelet
	t0   time.Time

	mu   sync.Mutex
	mem  []Event
	logs map[string][]LogLine
}

func newRecorder(path string, k *Kubelet) *recorder {
	return &recorder{path: path, k: k, t0: time.Now(), logs: map[string][]LogLine{}}
}

func (r *recorder) close() {}

// setStart sets the time live output is relative to.
func (r *recorder) setStart(t time.Time) {
	r.mu.Lock()
	r.t0 = t
	r.mu.Unlock()
}

func (r *recorder) add(e Event, live bool) {
	r.mu.Lock()
	r.mem = append(r.mem, e)
	r.mu.Unlock()
	if live {
		r.live(e.Time, e.Source, e.String())
	}
}

// live writes a line to the kubelet's Output.
func (r *recorder) live(t time.Time, src, text string) {
	if r.k.opts.Output == nil {
		return
	}
	r.mu.Lock()
	t0 := r.t0
	r.mu.Unlock()
	r.k.outMu.Lock()
	defer r.k.outMu.Unlock()
	fmt.Fprintf(r.k.opts.Output, "%9.3fs  %-12s %s\n", t.Sub(t0).Seconds(), src, text)
}

// output is a line a container printed; shown live, not recorded as an event
// (sidecars and the app record their events in the file).
func (r *recorder) output(src, line string) { r.live(time.Now(), src, line) }

func (r *recorder) proaLine(container, src, line string) {
	var m map[string]any
	if json.Unmarshal([]byte(line), &m) != nil {
		r.output(container+"/app", line)
		return
	}
	l := LogLine{Raw: line, Attrs: map[string]any{}}
	for k, v := range m {
		switch k {
		case "time":
			s, _ := v.(string)
			l.Time, _ = time.Parse(time.RFC3339Nano, s)
		case "level":
			l.Level, _ = v.(string)
		case "msg":
			l.Msg, _ = v.(string)
		default:
			l.Attrs[k] = v
		}
	}
	if l.Time.IsZero() {
		l.Time = time.Now()
	}
	r.mu.Lock()
	r.logs[container] = append(r.logs[container], l)
	r.mu.Unlock()
	msg := l.Msg
	if l.Level != "" && l.Level != "INFO" {
		msg = l.Level + " " + msg
	}
	r.add(Event{Time: l.Time, Source: src, Msg: msg, Fields: l.Attrs}, true)
}

// events returns every event, oldest first.
func (r *recorder) events() []Event {
	r.mu.Lock()
	out := append([]Event(nil), r.mem...)
	r.mu.Unlock()
	if f, err := os.Open(r.path); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var e Event
			if json.Unmarshal(sc.Bytes(), &e) == nil {
				out = append(out, e)
			}
		}
		f.Close()
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	return out
}

func (p *Pod) event(src, msg string, fields map[string]any) {
	p.eventAt(time.Now(), src, msg, fields)
}

func (p *Pod) eventAt(t time.Time, src, msg string, fields map[string]any) {
	p.events.add(Event{Time: t, Source: src, Msg: msg, Fields: fields}, true)
	p.mu.Lock()
	p.notifyLocked()
	p.mu.Unlock()
}

// Note records an event from the test (shown in the timeline).
func (p *Pod) Note(msg string) { p.event("test", msg, nil) }

// Events returns everything recorded for this Pod, oldest first.
func (p *Pod) Events() []Event { return p.events.events() }

// FindEvent returns the first event from src whose message starts with
// prefix.
func (p *Pod) FindEvent(src, prefix string) (Event, bool) {
	for _, e := range p.Events() {
		if e.Source == src && strings.HasPrefix(e.Msg, prefix) {
			return e, true
		}
	}
	return Event{}, false
}

// WaitEvent waits for an event FindEvent would return.
func (p *Pod) WaitEvent(ctx context.Context, src, prefix string) (Event, error) {
	var e Event
	err := p.WaitFor(ctx, "event "+src+": "+prefix, func() bool {
		var ok bool
		e, ok = p.FindEvent(src, prefix)
		return ok
	})
	return e, err
}

// ProaLogs returns the JSON log lines proa wrote in container name ("" for
// the first proa container).
func (p *Pod) ProaLogs(name string) []LogLine {
	if name == "" {
		name = p.ProaContainer()
	}
	p.events.mu.Lock()
	defer p.events.mu.Unlock()
	return append([]LogLine(nil), p.events.logs[name]...)
}

// FindLog returns proa's first log line with message msg.
func (p *Pod) FindLog(name, msg string) (LogLine, bool) {
	for _, l := range p.ProaLogs(name) {
		if l.Msg == msg {
			return l, true
		}
	}
	return LogLine{}, false
}

// Timeline formats events as "t+S.sss  SOURCE  MESSAGE" lines, relative to t0.
func Timeline(events []Event, t0 time.Time) string {
	var b strings.Builder
	for _, e := range events {
		d, sign := e.Time.Sub(t0), "+"
		if d < 0 {
			d, sign = -d, "-"
		}
		fmt.Fprintf(&b, "t%s%.3fs  %-14s %s\n", sign, d.Seconds(), e.Source, e.String())
	}
	return b.String()
}
