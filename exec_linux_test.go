package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// Signals, and proa as PID 1 of its own PID namespace (with that
// namespace's /proc mounted in a mount namespace of its own), where it must
// reap every orphan the command leaves without losing the command's status.

func init() {
	childModes["signals"] = childSignals // signals READY RECORD CODE: record the signals received
	childModes["sleep"] = childSleep     // sleep READY: wait to be killed
	childModes["pid1"] = childPID1       // pid1 PROA-ARGS...: mount /proc, then become proa
	childModes["orphans"] = childOrphans // orphans REPORT N CODE: orphan N processes, report on their reaping
	childModes["spawn"] = childSpawn     // spawn N: start N orphan processes, print their PIDs, exit
	childModes["orphan"] = childOrphan   // orphan: exit once reparented to PID 1
	childModes["ignored"] = childIgnored // ignored READY RECORD CODE: record the signals ignored at start, then as signals
}

// childIgnored records which forwarded signals it started with ignored,
// as "ignored NAME" lines, then records the signals it receives as
// childSignals does.
func childIgnored(args []string) int {
	var ignored []string
	for _, s := range testSignals {
		if signal.Ignored(s) {
			ignored = append(ignored, "ignored "+s.String())
		}
	}
	code := childSignals(args)
	b, err := os.ReadFile(args[1])
	if err != nil {
		return 1
	}
	if err := os.WriteFile(args[1], []byte(strings.Join(append(ignored, string(b)), "\n")), 0o644); err != nil {
		return 1
	}
	return code
}

// testSignals is SPEC §5's list of forwarded signals.
var testSignals = []syscall.Signal{
	syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT,
	syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH,
}

// childSignals records the forwarded signals and SIGCHLD it receives. Once
// one has arrived it waits until none has come for a while, so a duplicate or
// an extra signal is seen too, then writes their names, one a line.
func childSignals(args []string) int {
	exitWithParent()
	ready, record, code := args[0], args[1], atoi(args[2])
	ch := make(chan os.Signal, 64)
	for _, s := range append(testSignals, syscall.SIGCHLD) {
		signal.Notify(ch, s)
	}
	touch(ready)
	var got []string
	quiet := time.NewTimer(childLifetime)
	for waiting := true; waiting; {
		select {
		case s := <-ch:
			got = append(got, s.String())
			quiet.Reset(100 * time.Millisecond)
		case <-quiet.C:
			waiting = false
		}
	}
	if err := os.WriteFile(record, []byte(strings.Join(got, "\n")), 0o644); err != nil {
		return 1
	}
	return code
}

func childSleep(args []string) int {
	exitWithParent()
	touch(args[0])
	time.Sleep(childLifetime)
	return 99
}

// signalled runs argv under proa, sends it sigs once the command has made
// the file ready, and returns proa.
func signalled(t *testing.T, ready string, argv []string, sigs ...os.Signal) *launched {
	t.Helper()
	l := launch(t, proaCmd(t, nil, append([]string{"--log-level", "debug", "--"}, argv...)...))
	l.await(ready)
	for _, s := range sigs {
		l.signal(s)
	}
	return l
}

// checkRecord checks that proa exited with code and that the command
// recorded exactly the signals want.
func checkRecord(t *testing.T, l *launched, code int, record string, want ...string) {
	t.Helper()
	if got := l.exitCode(); got != code {
		t.Errorf("proa exited %d, want the command's %d; stderr:\n%s", got, code, &l.stderr)
	}
	b, err := os.ReadFile(record)
	if err != nil {
		t.Fatalf("the command left no record: %v; stderr:\n%s", err, &l.stderr)
	}
	got := strings.FieldsFunc(string(b), func(r rune) bool { return r == '\n' })
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("signals the command received (-want +got):\n%s", diff)
	}
}

func TestSignalForwarding(t *testing.T) {
	for i, sig := range testSignals {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			ready, record, code := filepath.Join(dir, "ready"), filepath.Join(dir, "record"), 10+i
			l := signalled(t, ready, childArgv(t, "signals", ready, record, strconv.Itoa(code)), sig)
			checkRecord(t, l, code, record, sig.String())
		})
	}
	t.Run("command dies from TERM", func(t *testing.T) {
		t.Parallel()
		ready := filepath.Join(t.TempDir(), "ready")
		l := signalled(t, ready, childArgv(t, "sleep", ready), syscall.SIGTERM)
		if got := l.exitCode(); got != 143 {
			t.Errorf("proa exited %d, want 143; stderr:\n%s", got, &l.stderr)
		}
	})
}

// Signals that proa's parent left ignored (nohup, a trap that ignores HUP) stay ignored
// for the command, and proa neither forwards them nor dies of them, as
// tini. Go's runtime keeps the ignored state of HUP and INT only.
func TestIgnoredSignalsStayIgnored(t *testing.T) {
	dir := t.TempDir()
	ready, record := filepath.Join(dir, "ready"), filepath.Join(dir, "record")
	args := append([]string{"--log-level", "debug", "--"}, childArgv(t, "ignored", ready, record, "7")...)
	cmd := exec.Command("/bin/sh", append([]string{"-c", `trap '' HUP INT; exec "$@"`, "sh", testBinary(t)}, args...)...)
	cmd.Env = cleanEnv("PROA_TEST_AS=proa")
	l := launch(t, cmd)
	l.await(ready)
	l.signal(syscall.SIGHUP)
	l.signal(syscall.SIGINT)
	time.Sleep(20 * time.Millisecond) // before the USR1 that ends the record
	l.signal(syscall.SIGUSR1)
	checkRecord(t, l, 7, record, "ignored "+syscall.SIGINT.String(), "ignored "+syscall.SIGHUP.String(), syscall.SIGUSR1.String())
}

// A Go program cannot tell a forwarded SIGURG from its runtime's own, so a
// shell with traps checks SIGURG; the Go child checks SIGCHLD, which nothing
// else sends it as it has no children. Each ends with a forwarded SIGUSR1,
// sent after the others, and waits a little more for stragglers.
func TestSignalsNotForwarded(t *testing.T) {
	t.Run("SIGCHLD", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		ready, record := filepath.Join(dir, "ready"), filepath.Join(dir, "record")
		l := signalled(t, ready, childArgv(t, "signals", ready, record, "7"),
			syscall.SIGCHLD, syscall.SIGCHLD, syscall.SIGUSR1)
		checkRecord(t, l, 7, record, syscall.SIGUSR1.String())
	})
	t.Run("SIGURG", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		ready, record := filepath.Join(dir, "ready"), filepath.Join(dir, "record")
		script := `trap 'echo URG >>"$1"' URG
trap 'echo USR1 >>"$1"; got=1' USR1
sleep 20 </dev/null >/dev/null 2>&1 & bg=$!
: >"$2"
while [ -z "$got" ] && kill -0 $bg 2>/dev/null; do wait $bg; done
kill $bg
sleep 0.2
exit 7`
		l := signalled(t, ready, []string{"/bin/sh", "-c", script, "sh", record, ready},
			syscall.SIGURG, syscall.SIGURG, syscall.SIGUSR1)
		checkRecord(t, l, 7, record, "USR1")
	})
}

const orphanWait = 5 * time.Second

// childPID1 runs as PID 1 of a new PID and mount namespace, mounts that
// namespace's /proc, and execs proa, which stays PID 1.
func childPID1(args []string) int {
	exe, err := os.Executable()
	if err == nil {
		err = syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, "")
	}
	if err == nil {
		err = syscall.Mount("proc", "/proc", "proc", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, "")
	}
	if err == nil {
		env := []string{"PROA_TEST_AS=proa"}
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "PROA_TEST_AS=") {
				env = append(env, kv)
			}
		}
		err = syscall.Exec(exe, append([]string{exe}, args...), env)
	}
	fmt.Fprintln(os.Stderr, "pid1:", err)
	return 111
}

// childOrphans starts a process that starts N children and exits at once,
// leaving them to PID 1; they exit once reparented. It then waits until
// every one of them is gone from /proc, that is, reaped, and reports its own
// parent, the number of orphans, those never reaped and any zombie left in
// the namespace.
func childOrphans(args []string) int {
	exitWithParent()
	report, n, code := args[0], args[1], atoi(args[2])
	exe, err := os.Executable()
	if err != nil {
		return 1
	}
	out, err := exec.Command(exe, "spawn", n).Output()
	if err != nil {
		fmt.Fprintln(os.Stderr, "orphans: spawn:", err)
		return 1
	}
	pids := strings.Fields(string(out))
	var b strings.Builder
	fmt.Fprintf(&b, "ppid %d\norphans %d\n", os.Getppid(), len(pids))
	deadline := time.Now().Add(orphanWait)
	for _, pid := range pids {
		for {
			state, err := procState(pid)
			if errors.Is(err, fs.ErrNotExist) {
				break
			}
			if time.Now().After(deadline) {
				fmt.Fprintf(&b, "not reaped %s %s %v\n", pid, state, err)
				break
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	fmt.Fprintf(&b, "zombies %q\n", zombies())
	if err := os.WriteFile(report, []byte(b.String()), 0o644); err != nil {
		return 1
	}
	return code
}

func childSpawn(args []string) int {
	exe, err := os.Executable()
	if err != nil {
		return 1
	}
	for range atoi(args[0]) {
		c := exec.Command(exe, "orphan")
		if err := c.Start(); err != nil {
			fmt.Fprintln(os.Stderr, "spawn:", err)
			return 1
		}
		fmt.Println(c.Process.Pid)
	}
	return 0
}

func childOrphan([]string) int {
	for deadline := time.Now().Add(orphanWait); os.Getppid() != 1 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	return 0
}

// procState is the state letter of /proc/PID/stat.
func procState(pid string) (string, error) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return "", err
	}
	_, rest, ok := bytes.Cut(b, []byte(") "))
	if !ok || len(rest) == 0 {
		return "", fmt.Errorf("/proc/%s/stat: %q", pid, b)
	}
	return string(rest[:1]), nil
}

// zombies lists the processes in state Z, as "PID (comm)".
func zombies() []string {
	var zs []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		if state, _ := procState(e.Name()); state == "Z" {
			comm, _ := os.ReadFile("/proc/" + e.Name() + "/comm")
			zs = append(zs, e.Name()+" ("+strings.TrimSpace(string(comm))+")")
		}
	}
	return zs
}

// requireRoot skips a test that needs root, except in CI, where it fails.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("needs root to make PID and mount namespaces; CI=true, so not skipping")
	}
	t.Skip("needs root to make PID and mount namespaces")
}

// launchPID1 starts proa with opts and the command argv as PID 1 of new
// PID and mount namespaces. Killing it, as the cleanup does on failure,
// kills everything in them.
func launchPID1(t *testing.T, opts []string, argv ...string) *launched {
	t.Helper()
	requireRoot(t)
	args := append(append([]string{"pid1", "--log-level", "debug"}, opts...), "--")
	cmd := exec.Command(testBinary(t), append(args, argv...)...)
	cmd.Env = cleanEnv("PROA_TEST_AS=child")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS}
	return launch(t, cmd)
}

func TestPID1ReapsOrphans(t *testing.T) {
	t.Parallel()
	report := filepath.Join(t.TempDir(), "report")
	l := launchPID1(t, nil, childArgv(t, "orphans", report, "5", "7")...)
	if got := l.exitCode(); got != 7 {
		t.Errorf("proa exited %d, want the command's 7; stderr:\n%s", got, &l.stderr)
	}
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatalf("no report from the command: %v; stderr:\n%s", err, &l.stderr)
	}
	if want := "ppid 1\norphans 5\nzombies []\n"; string(b) != want {
		t.Errorf("the command reported:\n%s\nwant:\n%s", b, want)
	}
}

func TestPID1ExitCode(t *testing.T) {
	// The shell leaves orphans that exit as it does, so proa's reaper
	// collects them and the command in the same breath.
	orphaning := `for i in 1 2 3 4 5 6 7 8; do /bin/true & done; exit 5`
	tests := []struct {
		name string
		argv []string
		want int
	}{
		{"exit 0", childArgv(t, "exit", "0"), 0},
		{"exit 3", childArgv(t, "exit", "3"), 3},
		{"SIGKILL", childArgv(t, "kill", "9"), 137},
		{"orphans exiting with the command 1", []string{"/bin/sh", "-c", orphaning}, 5},
		{"orphans exiting with the command 2", []string{"/bin/sh", "-c", orphaning}, 5},
		{"orphans exiting with the command 3", []string{"/bin/sh", "-c", orphaning}, 5},
		{"not found", []string{"proa-test-no-such-command"}, 127},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := launchPID1(t, nil, tt.argv...)
			if got := l.exitCode(); got != tt.want {
				t.Errorf("proa as PID 1 exited %d, want %d; stderr:\n%s", got, tt.want, &l.stderr)
			}
		})
	}
}

func TestPID1ForwardsSignals(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			ready, record := filepath.Join(dir, "ready"), filepath.Join(dir, "record")
			l := launchPID1(t, nil, childArgv(t, "signals", ready, record, "9")...)
			l.await(ready)
			l.signal(sig)
			checkRecord(t, l, 9, record, sig.String())
		})
	}
	t.Run("command dies from TERM", func(t *testing.T) {
		t.Parallel()
		ready := filepath.Join(t.TempDir(), "ready")
		l := launchPID1(t, nil, childArgv(t, "sleep", ready)...)
		l.await(ready)
		l.signal(syscall.SIGTERM)
		if got := l.exitCode(); got != 143 {
			t.Errorf("proa as PID 1 exited %d, want 143; stderr:\n%s", got, &l.stderr)
		}
	})
}

// TestPID1ReapsAdoptedOrphans has a process that is not proa's descendant
// (as from kubectl exec) leave an orphan in proa's namespace while proa has
// no command running: before it, waiting on a --wait-http URL, and after
// it, retrying a shutdown URL. Both URLs answer 503. proa must reap the
// orphan all the same.
func TestPID1ReapsAdoptedOrphans(t *testing.T) {
	requireRoot(t)
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		t.Skip("needs nsenter:", err)
	}
	for name, opt := range map[string]string{"while waiting": "--wait-http", "during shutdown": "-g"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			asked := make(chan struct{})
			var once sync.Once
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				once.Do(func() { close(asked) })
				w.WriteHeader(http.StatusServiceUnavailable)
			}))
			t.Cleanup(srv.Close) // after proa is gone
			l := launchPID1(t, []string{"--shutdown-timeout", "10s", opt, srv.URL}, "/bin/true")
			select {
			case <-asked:
			case <-l.done:
				t.Fatalf("proa exited before asking %s; stderr:\n%s", srv.URL, &l.stderr)
			case <-time.After(waitLimit):
				t.Fatalf("proa never asked %s", srv.URL)
			}
			pid := strconv.Itoa(l.cmd.Process.Pid)
			orphan := "sleep 0.2 </dev/null >/dev/null 2>&1 & exit 0"
			if out, err := exec.Command(nsenter, "-t", pid, "-p", "--", "/bin/sh", "-c", orphan).CombinedOutput(); err != nil {
				t.Fatalf("nsenter: %v\n%s", err, out)
			}
			// The orphan shows as proa's child, then, once it has exited, must go.
			seen := false
			for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(5 * time.Millisecond) {
				kids := childrenOf(pid)
				if len(kids) > 0 {
					seen = true
				} else if seen {
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("proa's children (PID state): %q; orphan seen: %v; want it reaped once it exits", kids, seen)
				}
			}
		})
	}
}

// childrenOf lists the children of ppid as "PID STATE".
func childrenOf(ppid string) []string {
	var kids []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		_, rest, _ := bytes.Cut(b, []byte(") "))
		if f := strings.Fields(string(rest)); len(f) > 1 && f[1] == ppid {
			kids = append(kids, e.Name()+" "+f[0])
		}
	}
	return kids
}
