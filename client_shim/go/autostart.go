package coactivetoken

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
	"unicode"
)

// AutostartWait is how long StartDaemon waits for the daemon it started to answer.
const AutostartWait = 10 * time.Second

const logName = "credd.log"

// A service manager's protocols address the caller (if it runs as a service), never a daemon
// the caller starts: that daemon would report itself ready on the caller's behalf.
var serviceEnv = map[string]bool{
	"NOTIFY_SOCKET": true, "LISTEN_FDS": true, "LISTEN_PID": true, "LISTEN_FDNAMES": true,
	"WATCHDOG_USEC": true, "WATCHDOG_PID": true,
}

// ServiceInstalled reports whether a systemd user unit or a launchd agent for coactive-credd
// is installed (what `coactive-credd install-service` writes).
func ServiceInstalled() bool {
	home := os.Getenv("HOME")
	if home == "" {
		home, _ = os.UserHomeDir()
	}
	candidates := []string{filepath.Join(home, "Library", "LaunchAgents", "ai.coactive.credd.plist")}
	for _, dir := range []string{os.Getenv("XDG_CONFIG_HOME"), filepath.Join(home, ".config")} {
		if dir == "" {
			continue
		}
		for _, unit := range []string{"coactive-credd.socket", "coactive-credd.service"} {
			candidates = append(candidates, filepath.Join(dir, "systemd", "user", unit))
		}
	}
	for _, p := range candidates {
		if _, err := os.Lstat(p); err == nil {
			return true
		}
	}
	return false
}

// AutostartEnabled reports whether a caller that finds no daemon starts one:
// $COACTIVE_CREDD_AUTOSTART 1 or 0; unset, true unless a user service is installed (then the
// service manager owns the daemon).
func AutostartEnabled() bool {
	switch strings.ToLower(strings.TrimSpace(os.Getenv("COACTIVE_CREDD_AUTOSTART"))) {
	case "0", "false", "no", "off":
		return false
	case "1", "true", "yes", "on":
		return true
	}
	return !ServiceInstalled()
}

// noDaemon: the connection failed because nothing serves the socket (not: slow, not ours).
func noDaemon(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == CodeUnreachable &&
		(errors.Is(e.err, syscall.ENOENT) || errors.Is(e.err, syscall.ECONNREFUSED))
}

func startFailed(message string) *Error {
	return newError(CodeUnreachable, message, startHint, 0)
}

// StartDaemon starts `coactive-credd serve` in the background for socketPath ("" means
// DefaultSocketPath()) and waits until it answers. The daemon runs in its own session with
// stdin from /dev/null and its output appended to credd.log (0600) in the socket's private
// folder; it gets this process's environment. When many callers start one at once, the
// daemon's startup lock lets one serve and the others exit "already running": their callers
// wait for the one that won. The command is $COACTIVE_CREDD_COMMAND, else coactive-credd on
// PATH. It fails with an *Error (ExitUnreachable) naming the log when no daemon answers.
func StartDaemon(ctx context.Context, socketPath string) error {
	if socketPath == "" {
		socketPath = DefaultSocketPath()
	}
	sock, err := filepath.Abs(socketPath)
	if err != nil {
		sock = socketPath
	}
	dir := filepath.Dir(sock)
	logPath := filepath.Join(dir, logName)
	notRunning := "coactive-credd is not running on " + sock
	if err := privateFolder(dir); err != nil {
		return startFailed(notRunning + " and cannot be started there: " + err.Error())
	}
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return startFailed(notRunning + " and cannot be started there: " + err.Error())
	}
	defer logf.Close()
	_ = logf.Chmod(0o600)
	var offset int64
	if st, err := logf.Stat(); err == nil {
		offset = st.Size()
	}
	command := os.Getenv("COACTIVE_CREDD_COMMAND")
	if command == "" {
		command = "coactive-credd"
	}
	cmd := exec.Command(command, "serve", "--socket", sock)
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); !serviceEnv[name] {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Stdout, cmd.Stderr = logf, logf // stdin: /dev/null
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		reason := err.Error()
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			reason = "not found"
		}
		return startFailed(fmt.Sprintf("%s and %s could not be started (%s); "+
			"set COACTIVE_CREDD_COMMAND to the coactive-credd executable", notRunning, command, reason))
	}
	logf.Close()
	exited := make(chan struct{})
	go func() { // collects the daemon whenever it ends, so it never lingers as a zombie
		_ = cmd.Wait()
		close(exited)
	}()
	deadline := time.Now().Add(AutostartWait)
	running := true
	for {
		if running {
			select {
			case <-exited:
				running = false
				// Another daemon holding the socket is why ours left: wait for that one.
				if !lostRace(logPath, offset) {
					return startFailed(notRunning + " and starting it failed" + lastWords(logPath, offset) + "; see " + logPath)
				}
			default:
			}
		}
		wait := time.Until(deadline)
		if wait < 50*time.Millisecond {
			wait = 50 * time.Millisecond
		}
		if answers(sock, wait) {
			return nil
		}
		if !time.Now().Before(deadline) {
			return startFailed(fmt.Sprintf("coactive-credd was started but did not answer on %s within %s; see %s",
				sock, AutostartWait, logPath))
		}
		select {
		case <-ctx.Done():
			return unreachable(sock, ctx.Err())
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// privateFolder creates dir (and missing parents) 0700, or checks that it is ours and private,
// as the daemon will: otherwise the log would be written where others can reach it.
func privateFolder(dir string) error {
	if bad, what, _ := unsafeParent(dir); bad != "" {
		return fmt.Errorf("%s is not safe (%s)", bad, what)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	st, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !st.IsDir() || !ok || int(sys.Uid) != os.Getuid() || st.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%s must be a folder of yours with mode 0700", dir)
	}
	return nil
}

// answers: GET /healthz answers 200. A daemon still loading has its socket bound already: the
// connection waits in the backlog until it serves (or is reset if it fails).
func answers(sock string, timeout time.Duration) bool {
	conn, err := net.DialTimeout("unix", sock, timeout)
	if err != nil {
		return false
	}
	defer conn.Close()
	if verifyPeer(conn, sock) != nil {
		return false
	}
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if _, err := conn.Write([]byte("GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return false
	}
	fields := strings.Fields(line)
	return len(fields) >= 2 && fields[1] == "200"
}

// lostRace: the daemon started here left because another one holds the socket (its last words).
func lostRace(logPath string, offset int64) bool {
	f, err := os.Open(logPath)
	if err != nil {
		return false
	}
	defer f.Close()
	buf := make([]byte, 1<<16)
	n, _ := f.ReadAt(buf, offset)
	return bytes.Contains(buf[:n], []byte("already running"))
}

// lastWordsMax is how many characters of the daemon's last log line a failed start shows.
const lastWordsMax = 200

// lastWords is ": <why>": the last line the daemon wrote to its log since offset (why it
// failed: the daemon's log never holds a secret), without its "coactive-credd: " prefix,
// control characters escaped, cut to lastWordsMax characters; "" when there is none.
func lastWords(logPath string, offset int64) string {
	f, err := os.Open(logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	start := offset
	if st, err := f.Stat(); err == nil && st.Size()-(1<<16) > start {
		start = st.Size() - (1 << 16)
	}
	buf := make([]byte, 1<<16)
	n, _ := f.ReadAt(buf, start)
	line := ""
	for _, l := range strings.Split(string(buf[:n]), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			line = l
		}
	}
	if line == "" {
		return ""
	}
	if i := strings.Index(line, "coactive-credd: "); i >= 0 && i+16 < len(line) {
		line = line[i+16:]
	}
	var b strings.Builder
	for _, r := range strings.ToValidUTF8(line, "\uFFFD") {
		if unicode.IsControl(r) {
			fmt.Fprintf(&b, "\\x%02x", r)
		} else {
			b.WriteRune(r)
		}
	}
	runes := []rune(b.String())
	if len(runes) > lastWordsMax {
		runes = append(runes[:lastWordsMax-1], '\u2026')
	}
	return ": " + string(runes)
}
