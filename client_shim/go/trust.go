package coactivetoken

// Before a byte goes to the socket, the client checks whom it talks to: the one rule of
// every client (docs/SECURITY.md; tests/vectors/safe_path.json lists its situations).
// COACTIVE_CREDD_DAEMON_UID must be a uid in ASCII digits, and makes that uid trusted as well
// (an app container beside a sidecar). The socket's folder, when it exists, is a real folder
// (no symlink) of a trusted uid that nobody else can write to. Every folder above it, up to
// the home folder or /, as written and with symlinks resolved, is one of theirs that nobody
// else can write to (root-owned sticky folders such as /tmp excepted), unless
// COACTIVE_CREDD_DAEMON_UID is set and the folder exists: the folders above a sidecar's are
// the pod's (an emptyDir is 0777). The process that answers runs as a trusted uid, as the
// kernel tells it (SO_PEERCRED on Linux, LOCAL_PEERCRED on macOS).

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

const maxUID = 1<<32 - 2 // (uid_t)-1 is "no uid"

// daemonUID is $COACTIVE_CREDD_DAEMON_UID: -1 when unset or empty; a bad_request Error
// (exit 2) unless ASCII decimal digits without sign, space or leading zero, at most
// 4294967294.
func daemonUID() (int64, error) {
	raw := os.Getenv("COACTIVE_CREDD_DAEMON_UID")
	if raw == "" {
		return -1, nil
	}
	ok := len(raw) <= 10 && (raw == "0" || raw[0] != '0')
	for i := 0; ok && i < len(raw); i++ {
		ok = raw[i] >= '0' && raw[i] <= '9'
	}
	var n uint64
	if ok {
		n, _ = strconv.ParseUint(raw, 10, 64)
		ok = n <= maxUID
	}
	if !ok {
		return -1, newError("bad_request", "COACTIVE_CREDD_DAEMON_UID is not a uid number",
			"set it to the daemon's uid in ASCII digits, as `id -u` prints it, or unset COACTIVE_CREDD_DAEMON_UID", 0)
	}
	return int64(n), nil
}

// trusted says whether uid may own the socket's folder or run the daemon: this user, root,
// or $COACTIVE_CREDD_DAEMON_UID.
func trusted(uid uint32) (bool, error) {
	if int(uid) == os.Geteuid() || uid == 0 {
		return true, nil
	}
	extra, err := daemonUID()
	return extra >= 0 && uint32(extra) == uid, err
}

func untrusted(socketPath, where, what, fix string) *Error {
	return newError(CodeUntrusted,
		"refusing to talk to the daemon on "+socketPath+": "+where+" is not safe ("+what+"); nothing was sent",
		"fix it with `"+fix+"`", 0)
}

// verifyFolder applies the rule to the socket's folder and the folders above it. A folder
// that does not exist is no daemon (connect says so), once the folders above are safe.
func verifyFolder(socketPath string) error {
	extra, err := daemonUID()
	if err != nil {
		return err
	}
	dir := filepath.Dir(socketPath)
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	st, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrPermission) {
		if bad, what, fix := unsafeParent(dir); bad != "" {
			return untrusted(socketPath, bad, what, fix)
		}
		up := filepath.Dir(dir)
		fix := "ls -ld " + up
		if os.Getenv("XDG_RUNTIME_DIR") != "" {
			fix = "unset XDG_RUNTIME_DIR  # after su; or set it to a folder of yours"
		}
		return untrusted(socketPath, up, "permission denied: it is another user's", fix)
	}
	if err == nil {
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
			e := untrusted(socketPath, dir, fmt.Sprintf("owner uid %d, not you (uid %d)", sys.Uid, os.Geteuid()),
				fmt.Sprintf("sudo chown %d %s  # or remove it if you did not make it", os.Geteuid(), dir))
			if extra < 0 { // a sidecar's folder, perhaps: the app's way to trust its uid
				e.Hint += fmt.Sprintf("; or, if uid %d runs your daemon (a sidecar), set "+
					"COACTIVE_CREDD_DAEMON_UID=%d and list your uid %d in its allowed_uids", sys.Uid, sys.Uid, os.Geteuid())
			}
			return e
		}
		if sys.Mode&0o022 != 0 {
			return untrusted(socketPath, dir, fmt.Sprintf("mode %04o, writable by others", sys.Mode&0o7777), "chmod go-w "+dir)
		}
		if extra >= 0 {
			return nil // a sidecar's folder: the folders above are the pod's
		}
	}
	if bad, what, fix := unsafeParent(dir); bad != "" {
		return untrusted(socketPath, bad, what, fix)
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
// written and with symlinks resolved, that breaks the rule, with what is wrong and the fix;
// "" when there is none. Autostart never starts a daemon, nor writes its log, below such a
// folder.
func unsafeParent(path string) (string, string, string) {
	home, _ := os.UserHomeDir()
	homeReal, err := filepath.EvalSymlinks(home)
	if err != nil {
		homeReal = home
	}
	start := filepath.Dir(filepath.Clean(path))
	existing := start
	for {
		if _, err := os.Stat(existing); err == nil || existing == filepath.Dir(existing) {
			break
		}
		existing = filepath.Dir(existing)
	}
	chains := []string{start}
	if real, err := filepath.EvalSymlinks(existing); err == nil {
		chains = append(chains, real)
	}
	euid := os.Geteuid()
	for _, d := range chains {
		for {
			if st, err := os.Stat(d); err == nil { // a symlinked folder is judged by its target
				if sys, ok := st.Sys().(*syscall.Stat_t); ok {
					mode := sys.Mode & 0o7777
					if d == fmt.Sprintf("/tmp/runtime-%d", euid) && (int(sys.Uid) != euid || mode&0o077 != 0) {
						return d, fmt.Sprintf("owner uid %d, mode %04o; it must be yours with mode 0700", sys.Uid, mode),
							"sudo rm -rf " + d + "  # or set XDG_RUNTIME_DIR to a private folder of yours"
					}
					if ok, _ := trusted(sys.Uid); !ok {
						fix := fmt.Sprintf("sudo chown %d %s  # or remove it if you did not make it", euid, d)
						if rt := strings.TrimRight(os.Getenv("XDG_RUNTIME_DIR"), "/"); rt != "" && strings.HasPrefix(d+"/", rt+"/") {
							fix = "unset XDG_RUNTIME_DIR  # after su; or set it to a folder of yours"
						}
						return d, fmt.Sprintf("owner uid %d, not you", sys.Uid), fix
					}
					if mode&0o022 != 0 && !(sys.Uid == 0 && mode&syscall.S_ISVTX != 0) {
						return d, fmt.Sprintf("mode %04o, writable by others", mode), "chmod go-w " + d
					}
				}
			}
			if d == home || d == homeReal || d == filepath.Dir(d) {
				break
			}
			d = filepath.Dir(d)
		}
	}
	return "", "", ""
}
