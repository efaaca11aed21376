package main

import (
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

// appMain is the command proa runs. Its arguments are actions, done in
// order; it exits 0 after the last:
//
//	print TEXT          print TEXT on stdout
//	sleep DURATION      sleep (a trapped signal ends it)
//	exit N              exit with code N
//	trap SIG N          from now on, exit N on SIG (TERM, INT, HUP)
//	fail-once FILE N    the first time (FILE absent: create it), exit N
//	ps                  an event listing the processes in /proc
//
// Events: started, signal, ps, exiting.
func appMain(args []string) {
	const src = "app"
	exit := func(code int) {
		event(src, "exiting", "code", code)
		os.Exit(code)
	}
	bad := func(why string) {
		event(src, "bad arguments: "+why)
		exit(2)
	}
	event(src, "started", "argv", args, "pid", os.Getpid(), "uid", os.Getuid())
	traps := map[os.Signal]int{}
	sigs := make(chan os.Signal, 4)
	for i := 0; i < len(args); i++ {
		arg := func() string {
			if i+1 >= len(args) {
				bad(args[i] + " needs an argument")
			}
			i++
			return args[i]
		}
		num := func() int {
			n, err := strconv.Atoi(arg())
			if err != nil {
				bad(err.Error())
			}
			return n
		}
		switch a := args[i]; a {
		case "print":
			os.Stdout.WriteString(arg() + "\n")
		case "sleep":
			d, err := time.ParseDuration(arg())
			if err != nil {
				bad(err.Error())
			}
			select {
			case <-time.After(d):
			case s := <-sigs:
				event(src, "signal", "signal", s.String())
				exit(traps[s])
			}
		case "exit":
			exit(num())
		case "trap":
			var sig os.Signal
			switch name := arg(); name {
			case "TERM":
				sig = syscall.SIGTERM
			case "INT":
				sig = syscall.SIGINT
			case "HUP":
				sig = syscall.SIGHUP
			default:
				bad("unknown signal " + name)
			}
			traps[sig] = num()
			signal.Notify(sigs, sig)
		case "fail-once":
			path, code := arg(), num()
			if _, err := os.Stat(path); err != nil {
				if err := os.WriteFile(path, nil, 0o644); err != nil {
					bad(err.Error())
				}
				event(src, "failing once", "code", code)
				exit(code)
			}
			event(src, "failed before: going on")
		case "ps":
			event(src, "ps", "processes", processes())
		default:
			bad("unknown action " + a)
		}
	}
	exit(0)
}
