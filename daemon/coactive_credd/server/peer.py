"""Who is at the other end of a Unix socket, as the kernel says: ``SO_PEERCRED`` on Linux
(unix(7)), ``LOCAL_PEERCRED`` on macOS (``struct xucred``, sys/ucred.h). The routes and the
fast path judge every connection by it (docs/SECURITY.md)."""

from __future__ import annotations

import socket
import struct
from typing import Any

_SO_PEERCRED: int | None = getattr(socket, "SO_PEERCRED", None)
_UCRED = struct.Struct("=iII")  # pid_t is signed; uid_t and gid_t are unsigned (to 2**32 - 2)


def peer_credentials(sock: Any) -> tuple[int, int | None]:
    """The (uid, pid) of the process at the other end of a connected Unix socket, as the
    kernel gives them: the uid unsigned (a ``uid_t``, 0 to 2**32 - 2); the pid, or None on
    macOS, whose ``LOCAL_PEERCRED`` gives none. Raises OSError from ``getsockopt`` (not a
    Unix socket, or not connected). Linux: ``SO_PEERCRED``, unix(7); macOS: ``struct
    xucred`` in sys/ucred.h."""
    if _SO_PEERCRED is not None:  # Linux: struct ucred {pid_t pid; uid_t uid; gid_t gid;}
        pid, uid, _gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, _SO_PEERCRED, 12))
        return uid, pid
    # macOS/BSD: LOCAL_PEERCRED on SOL_LOCAL (0) answers a struct xucred {u_int version; uid_t uid; ...}
    raw = sock.getsockopt(0, 0x001, 76)
    _version, uid = struct.unpack_from("II", raw)
    return uid, None
