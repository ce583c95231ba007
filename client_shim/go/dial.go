package coactivetoken

// DialSocket, for the API proxy: a connection to the daemon's socket, checked the way every
// call of this package is (the folder, then the uid answering) before a byte is sent.

import (
	"context"
	"net"
)

// DialSocket connects to the daemon's socket (socketPath "" means DefaultSocketPath()) and
// checks whom it reached; the error is *Error (CodeUntrusted, or unreachable) with nothing
// sent. coactivehttp.SocketTransport dials with it.
func DialSocket(ctx context.Context, socketPath string) (net.Conn, error) {
	if socketPath == "" {
		socketPath = DefaultSocketPath()
	}
	if err := verifyFolder(socketPath); err != nil {
		return nil, err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socketPath)
	if err != nil {
		return nil, unreachable(socketPath, err)
	}
	if err := verifyPeer(conn, socketPath); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}
