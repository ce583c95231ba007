package coactivehttp

// SocketTransport: Coactive's API through the daemon's socket, so the program never holds a
// token (docs/PROTOCOL.md, "The API proxy").

import (
	"context"
	"net"
	"net/http"
	"time"

	coactivetoken "github.com/coactive-ai/coactive-credd/client_shim/go"
)

// ProfileHeader names the profile whose token the daemon adds to a proxied request.
const ProfileHeader = "Coactive-Profile"

// SocketTransport returns an http.RoundTripper that sends every request to the daemon's
// socket (socketPath "" means coactivetoken.DefaultSocketPath()), whose /api/ route forwards
// it to the profile's Coactive with the current token and streams the answer back. The
// request's scheme and host are not used (any URL whose path starts with /api/ will do,
// http://localhost/api/... or Coactive's own); Authorization is dropped, and Coactive-Profile
// is set to profile ("" means $COACTIVE_PROFILE or "default") unless the request has one.
// Each connection is checked as coactivetoken.DialSocket checks it.
func SocketTransport(socketPath, profile string) http.RoundTripper {
	if profile == "" {
		profile = coactivetoken.DefaultProfile()
	}
	base := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return coactivetoken.DialSocket(ctx, socketPath)
		},
		Proxy:               nil, // the socket is the only way out
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     50 * time.Second, // under the daemon's 60 s
		DisableCompression:  true,             // what Coactive sent, as it sent it
	}
	return &socketTransport{base: base, profile: profile}
}

type socketTransport struct {
	base    *http.Transport
	profile string
}

// RoundTrip implements http.RoundTripper; it never modifies req.
func (t *socketTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	out := req.Clone(req.Context())
	u := *req.URL
	u.Scheme, u.Host = "http", "localhost"
	out.URL, out.Host = &u, "localhost"
	out.Header.Del("Authorization")
	if out.Header.Get(ProfileHeader) == "" {
		out.Header.Set(ProfileHeader, t.profile)
	}
	return t.base.RoundTrip(out)
}

// CloseIdleConnections closes the kept-alive connections to the daemon.
func (t *socketTransport) CloseIdleConnections() { t.base.CloseIdleConnections() }
