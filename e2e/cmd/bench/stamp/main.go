// Command stamp is the command the benchmark gives proa: a tiny program
// (package os and time only) that appends a "started" event with the time to
// the Pod's events file as its first action, optionally sleeps, appends an
// "exiting" event and exits 0. The events have the harness's format
// (kubelet.Event), so kubelet.Pod.FindEvent("main/app", "started") finds
// them. Being small, it starts in well under a millisecond, so "ready status
// written -> command started" measures proa, not the command's own start-up.
//
//	stamp [DURATION]
package main

import (
	"os"
	"time"
)

func main() {
	emit("started") // first: this is the "command started" timestamp
	if len(os.Args) > 1 {
		d, err := time.ParseDuration(os.Args[1])
		if err != nil {
			os.Stderr.WriteString("stamp: " + err.Error() + "\n")
			os.Exit(2)
		}
		time.Sleep(d)
	}
	emit("exiting")
	os.Exit(0)
}

// emit appends {"t":TIME,"src":"CONTAINER/app","msg":MSG} to
// $PROA_E2E_EVENTS (set by the harness in proa's environment, which proa
// passes on to its command).
func emit(msg string) {
	t := time.Now()
	path := os.Getenv("PROA_E2E_EVENTS")
	if path == "" {
		return
	}
	src := "app"
	if c := os.Getenv("PROA_E2E_CONTAINER"); c != "" {
		src = c + "/app"
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return
	}
	f.WriteString(`{"t":"` + t.Format(time.RFC3339Nano) + `","src":"` + src + `","msg":"` + msg + `"}` + "\n")
	f.Close()
}
