package coactivetoken

// Before a byte goes to the socket, the client checks whom it talks to (docs/SECURITY.md):
// the socket's folder belongs to this user (or root) and nobody else can write to it, and the
// process that answers runs as this user, as the kernel tells it (SO_PEERCRED on Linux,
// LOCAL_PEERCRED on macOS). COACTIVE_CREDD_DAEMON_UID=N trusts uid N as well (an app
// container beside a sidecar). The rule is the Python client's (coactive_token.path_problem).

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// CodeUntrusted: the socket's folder or the daemon answering on it is not this user's.
// Nothing was sent. Its exit code is ExitUnreachable (3).
const CodeUntrusted = "untrusted_daemon"

// trusted says whether uid may own the socket's folder or run the daemon: this user, root,
// or $COACTIVE_CREDD_DAEMON_UID.
func trusted(uid uint32) (bool, error) {
	if int(uid) == os.Geteuid() || uid == 0 {
		return true, nil
	}
	extra := strings.TrimSpace(os.Getenv("COACTIVE_CREDD_DAEMON_UID"))
	if extra == "" {
		return false, nil
	}
	n, err := strconv.ParseUint(extra, 10, 32)
	if err != nil {
		return false, newError("bad_request", fmt.Sprintf("COACTIVE_CREDD_DAEMON_UID=%q is not a uid number", extra),
			"set it to the daemon's numeric uid (id -u), or unset COACTIVE_CREDD_DAEMON_UID", 0)
	}
	return uint32(n) == uid, nil
}

func untrusted(socketPath, where, what, fix string) *Error {
	return newError(CodeUntrusted,
		"refusing to talk to the daemon on "+socketPath+": "+where+" is not safe ("+what+"); nothing was sent",
		"fix it with `"+fix+"`", 0)
}

// verifyFolder refuses a socket whose folder is not a folder of a trusted uid that nobody
// else can write to. A folder that does not exist is no daemon (connect says so).
func verifyFolder(socketPath string) error {
	dir := filepath.Dir(socketPath)
	st, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if errors.Is(err, fs.ErrPermission) {
		up := filepath.Dir(dir)
		fix := "ls -ld " + up
		if os.Getenv("XDG_RUNTIME_DIR") != "" {
			fix = "unset XDG_RUNTIME_DIR  # after su; or set it to a folder of yours"
		}
		return untrusted(socketPath, up, "permission denied: it is another user's", fix)
	}
	if err != nil {
		return nil // connect will say what is wrong
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if st.Mode()&fs.ModeSymlink != 0 {
		return untrusted(socketPath, dir, "it is a symlink", "rm "+dir)
	}
	if !st.IsDir() {
		return untrusted(socketPath, dir, "not a folder", "ls -ld "+dir)
	}
	ok, err = trusted(sys.Uid)
	if err != nil {
		return err
	}
	if !ok {
		return untrusted(socketPath, dir, fmt.Sprintf("owner uid %d, not you (uid %d)", sys.Uid, os.Geteuid()),
			fmt.Sprintf("sudo chown %d %s  # or remove it if you did not make it", os.Geteuid(), dir))
	}
	if sys.Mode&0o022 != 0 {
		return untrusted(socketPath, dir, fmt.Sprintf("mode %04o, writable by others", sys.Mode&0o7777), "chmod go-w "+dir)
	}
	return nil
}

// verifyPeer refuses a daemon that does not run as a trusted uid. Where the platform cannot
// tell (peerUID answers -1), the folder check stands alone.
func verifyPeer(conn net.Conn, socketPath string) error {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return nil
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return untrusted(socketPath, socketPath, "cannot learn who runs it", "ls -l "+socketPath)
	}
	uid := int64(-1)
	var sockErr error
	if err := raw.Control(func(fd uintptr) { uid, sockErr = peerUID(int(fd)) }); err != nil {
		sockErr = err
	}
	if sockErr != nil {
		return untrusted(socketPath, socketPath, "cannot learn who runs it: "+sockErr.Error(), "ls -l "+socketPath)
	}
	if uid < 0 {
		return nil
	}
	ok, err = trusted(uint32(uid))
	if err != nil {
		return err
	}
	if !ok {
		return newError(CodeUntrusted,
			fmt.Sprintf("refusing to talk to the daemon on %s: it runs as uid %d, not as you (uid %d); nothing was sent",
				socketPath, uid, os.Geteuid()),
			fmt.Sprintf("stop that process; if uid %d runs your daemon (a sidecar), set COACTIVE_CREDD_DAEMON_UID=%d", uid, uid), 0)
	}
	return nil
}

// unsafeParent: the first existing folder above path (up to the home folder, or /), as
// written and with symlinks resolved, that breaks the rule; "" when there is none. Autostart
// never starts a daemon, nor writes its log, below such a folder.
func unsafeParent(path string) (string, string) {
	home, _ := os.UserHomeDir()
	start := filepath.Dir(filepath.Clean(path))
	chains := []string{start}
	if real, err := filepath.EvalSymlinks(start); err == nil {
		chains = append(chains, real)
	}
	for _, d := range chains {
		for {
			if st, err := os.Stat(d); err == nil {
				if sys, ok := st.Sys().(*syscall.Stat_t); ok {
					mine := int(sys.Uid) == os.Geteuid() || sys.Uid == 0
					sticky := sys.Uid == 0 && sys.Mode&syscall.S_ISVTX != 0
					if !mine {
						return d, fmt.Sprintf("owner uid %d, not you", sys.Uid)
					}
					if sys.Mode&0o022 != 0 && !sticky {
						return d, fmt.Sprintf("mode %04o, writable by others", sys.Mode&0o7777)
					}
					if d == fmt.Sprintf("/tmp/runtime-%d", os.Getuid()) && (int(sys.Uid) != os.Geteuid() || sys.Mode&0o077 != 0) {
						return d, "the runtime folder must be yours with mode 0700"
					}
				}
			}
			if d == home || d == filepath.Dir(d) {
				break
			}
			d = filepath.Dir(d)
		}
	}
	return "", ""
}
