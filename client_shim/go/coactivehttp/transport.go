// Package coactivehttp sends requests to Coactive with the access token that the local
// coactive-credd daemon holds:
//
//	client := &http.Client{Transport: &coactivehttp.Transport{}}
//
// It is apart from coactivetoken so that programs which only need the token do not link
// net/http.
package coactivehttp

import (
	"io"
	"net/http"
	"sync"

	coactivetoken "github.com/coactive-ai/coactive-credd/client_shim/go"
)

// Transport is an http.RoundTripper that sends requests to Coactive with
// "Authorization: Bearer <token>" from the daemon. When Coactive answers 401, it reports the
// rejected token (the daemon replaces it only if it is still current) and sends the request
// once more with the new token, provided the body can be replayed (no body, or GetBody set,
// as http.NewRequest does for bytes, strings and buffers). Failures to get a token are
// *coactivetoken.Error.
type Transport struct {
	Base    http.RoundTripper     // nil means http.DefaultTransport
	Profile string                // "" means $COACTIVE_PROFILE or "default"
	MinTTL  int                   // seconds the token must stay valid
	Client  *coactivetoken.Client // nil means a client for DefaultSocketPath()

	once sync.Once
}

func (t *Transport) client() *coactivetoken.Client {
	t.once.Do(func() {
		if t.Client == nil {
			t.Client = coactivetoken.NewClient("")
		}
	})
	return t.Client
}

func (t *Transport) base() http.RoundTripper {
	if t.Base != nil {
		return t.Base
	}
	return http.DefaultTransport
}

// RoundTrip implements http.RoundTripper; it never modifies req.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	token, err := t.client().Token(ctx, t.Profile, t.MinTTL)
	if err != nil {
		closeBody(req)
		return nil, err
	}
	first := req.Clone(ctx)
	first.Header.Set("Authorization", "Bearer "+token)
	resp, err := t.base().RoundTrip(first)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	if req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
		return resp, nil // the body is gone: hand back the 401
	}
	fresh, err := t.client().Refresh(ctx, t.Profile, token)
	if err != nil {
		return resp, nil // nothing better to offer than Coactive's own answer
	}
	retry := req.Clone(ctx)
	if req.GetBody != nil {
		body, err := req.GetBody()
		if err != nil {
			return resp, nil
		}
		retry.Body = body
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	retry.Header.Set("Authorization", "Bearer "+fresh.AccessToken)
	return t.base().RoundTrip(retry)
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}
