// Package coactivetoken gets a current Coactive access token from the local coactive-credd
// daemon, over its Unix socket (HTTP/1.1). Standard library only, and not net/http: the few
// lines of HTTP the daemon needs are written by hand, so a program that only wants a token
// starts fast. For an http.Client that sends the token itself, see the coactivehttp package.
//
//	tok, err := coactivetoken.Token(ctx, "", 0) // profile "" means $COACTIVE_PROFILE or "default"
//
// Every failure is an *Error carrying the daemon's error code and the exit code the
// command-line shims use. Error messages never contain a token.
//
// When no daemon answers, fetching or refreshing a token starts `coactive-credd serve` in the
// background and waits for it (StartDaemon), unless COACTIVE_CREDD_AUTOSTART=0 or a user
// service is installed (AutostartEnabled).
package coactivetoken

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Exit codes shared by every shim's command line.
const (
	ExitOK             = 0
	ExitUsage          = 2
	ExitUnreachable    = 3
	ExitUnknownProfile = 4
	ExitReauth         = 5
	ExitUnavailable    = 6
	ExitLocked         = 7
	exitOther          = 1
)

// Error codes beyond the daemon's own (bad_request, forbidden, unknown_profile, locked,
// reauth_required, upstream_unavailable).
const (
	CodeUnreachable = "unreachable"
	CodeBadAnswer   = "bad_answer"
)

const startHint = "start it with: coactive-credd serve; or as a service: coactive-credd install-service"

// DefaultTimeout bounds one call to the daemon (which may wait for Coactive).
// Version is the version of this module and of the coactive-token CLI built from it.
const Version = "0.1.0"

const DefaultTimeout = 30 * time.Second

// Error is every failure of this package.
type Error struct {
	Code     string // the daemon's error code, or CodeUnreachable / CodeBadAnswer
	Message  string
	Hint     string
	Status   int // the HTTP status of the daemon's answer; 0 when there was none
	ExitCode int
	err      error // why the daemon could not be reached, for CodeUnreachable
}

func (e *Error) Error() string {
	if e.Hint != "" {
		return e.Message + " (" + e.Hint + ")"
	}
	return e.Message
}

// Unwrap returns the connection error behind CodeUnreachable, if any.
func (e *Error) Unwrap() error { return e.err }

var exitByCode = map[string]int{
	"bad_request":          ExitUsage,
	"forbidden":            ExitUsage,
	"unknown_profile":      ExitUnknownProfile,
	"reauth_required":      ExitReauth,
	"upstream_unavailable": ExitUnavailable,
	"locked":               ExitLocked,
	CodeUnreachable:        ExitUnreachable,
	CodeUntrusted:          ExitUnreachable,
}

// Used only when an error answer carries no recognisable code.
var codeByStatus = map[int]string{
	400: "bad_request",
	403: "forbidden",
	404: "unknown_profile",
	423: "locked",
	424: "reauth_required",
	503: "upstream_unavailable",
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func newError(code, message, hint string, status int) *Error {
	exit, ok := exitByCode[code]
	if !ok {
		exit = exitOther
	}
	return &Error{Code: code, Message: oneLine(message), Hint: oneLine(hint), Status: status, ExitCode: exit}
}

func errorFromAnswer(status int, body []byte) *Error {
	var answer struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
			Hint    string `json:"hint"`
		} `json:"error"`
	}
	_ = json.Unmarshal(body, &answer)
	code := answer.Error.Code
	if code == "" {
		code = codeByStatus[status]
		if code == "" {
			code = "http_" + strconv.Itoa(status)
		}
	}
	msg := answer.Error.Message
	if msg == "" {
		msg = fmt.Sprintf("coactive-credd answered %d (%s)", status, code)
	}
	return newError(code, msg, answer.Error.Hint, status)
}

func unreachable(socketPath string, err error) *Error {
	var what string
	switch {
	case errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOENT):
		what = "coactive-credd is not running (no socket at " + socketPath + ")"
	case errors.Is(err, syscall.ECONNREFUSED):
		what = "coactive-credd is not running (nothing listens on " + socketPath + ")"
	case errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.EACCES):
		what = "cannot open coactive-credd's socket " + socketPath + ": permission denied"
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		what = "coactive-credd did not answer in time on " + socketPath
	default:
		what = "lost the connection to coactive-credd on " + socketPath
	}
	e := newError(CodeUnreachable, what, startHint, 0)
	e.err = err
	return e
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// DefaultSocketPath is the socket path every shim and the daemon agree on: see
// docs/ARCHITECTURE.md.
func DefaultSocketPath() string {
	if p := os.Getenv("COACTIVE_CREDD_SOCKET"); p != "" {
		return p
	}
	if h := os.Getenv("COACTIVE_CREDD_HOME"); h != "" {
		return filepath.Join(h, "credd.sock")
	}
	if runtime.GOOS == "darwin" {
		home := os.Getenv("HOME")
		if home == "" {
			home, _ = os.UserHomeDir()
		}
		return filepath.Join(home, "Library/Caches/TemporaryItems/coactive-credd/credd.sock")
	}
	if r := os.Getenv("XDG_RUNTIME_DIR"); r != "" {
		return filepath.Join(r, "coactive-credd", "credd.sock")
	}
	uid := strconv.Itoa(os.Getuid())
	if st, err := os.Stat("/run/user/" + uid); err == nil && st.IsDir() {
		return "/run/user/" + uid + "/coactive-credd/credd.sock"
	}
	return "/tmp/runtime-" + uid + "/coactive-credd/credd.sock"
}

// DefaultProfile is $COACTIVE_PROFILE, or "default".
func DefaultProfile() string {
	if p := os.Getenv("COACTIVE_PROFILE"); p != "" {
		return p
	}
	return "default"
}

// TokenInfo is one access token as the daemon served it. Its String hides the token.
type TokenInfo struct {
	Profile     string    `json:"profile"`
	AccessToken string    `json:"access_token"`
	TokenType   string    `json:"token_type"`
	ExpiresAt   time.Time `json:"expires_at"`
	ExpiresIn   int       `json:"expires_in"`
}

func (t TokenInfo) String() string {
	return fmt.Sprintf("TokenInfo{Profile:%q TokenType:%q ExpiresAt:%s ExpiresIn:%d}",
		t.Profile, t.TokenType, t.ExpiresAt.UTC().Format(time.RFC3339), t.ExpiresIn)
}

// GoString hides the token from %#v too.
func (t TokenInfo) GoString() string { return t.String() }

// Authorization is the header value: "Bearer <token>".
func (t TokenInfo) Authorization() string { return "Bearer " + t.AccessToken }

// Client talks to the daemon, keeping up to two connections alive between requests. Use
// NewClient; a zero Client works too (DefaultSocketPath(), no timeout). A Client is safe for
// concurrent use.
//
// When no daemon answers, Fetch, Token and Refresh start one (StartDaemon) if
// AutostartEnabled() and not DisableAutostart; Do and Status never do: they ask about the
// daemon that is there.
type Client struct {
	SocketPath       string        // "" means DefaultSocketPath()
	Timeout          time.Duration // bounds each call; 0 means none beyond the context's
	DisableAutostart bool          // never start a daemon, whatever $COACTIVE_CREDD_AUTOSTART says

	mu   sync.Mutex
	idle []*wireConn
}

// NewClient returns a client for socketPath ("" means DefaultSocketPath()) with
// DefaultTimeout.
func NewClient(socketPath string) *Client {
	if socketPath == "" {
		socketPath = DefaultSocketPath()
	}
	return &Client{SocketPath: socketPath, Timeout: DefaultTimeout}
}

func (c *Client) socketPath() string {
	if c.SocketPath == "" {
		return DefaultSocketPath()
	}
	return c.SocketPath
}

// Do sends any request (for example admin calls) with body, if not nil, as JSON, and returns
// the status and raw body. method is an upper-case HTTP method and path begins with "/" (with
// its query, URL-encoded). It fails only when the request is invalid or the daemon cannot be
// reached.
func (c *Client) Do(ctx context.Context, method, path string, body any) (int, []byte, error) {
	var payload []byte
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		payload = b
	}
	var deadline time.Time // a deadline on the connection: no timer or goroutine of its own
	if c.Timeout > 0 {
		deadline = time.Now().Add(c.Timeout)
	}
	return c.exchange(ctx, deadline, method, path, payload)
}

func (c *Client) call(ctx context.Context, method, path string, body any, out any) error {
	status, data, err := c.Do(ctx, method, path, body)
	if err != nil {
		return err
	}
	if status >= 400 {
		return errorFromAnswer(status, data)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return newError(CodeBadAnswer, "coactive-credd sent a malformed answer", "", status)
	}
	return nil
}

func tokenPath(route, profile string, minTTL int) string {
	if profile == "" {
		profile = DefaultProfile()
	}
	q := url.Values{"profile": {profile}}
	if minTTL > 0 {
		q.Set("min_ttl", strconv.Itoa(minTTL))
	}
	return route + "?" + q.Encode()
}

func (c *Client) fetch(ctx context.Context, method, path string, body any) (*TokenInfo, error) {
	var t TokenInfo
	err := c.call(ctx, method, path, body, &t)
	if err != nil && noDaemon(err) && !c.DisableAutostart && AutostartEnabled() {
		if err = StartDaemon(ctx, c.socketPath()); err == nil {
			err = c.call(ctx, method, path, body, &t)
		}
	}
	if err != nil {
		return nil, err
	}
	if t.AccessToken == "" || t.ExpiresAt.IsZero() {
		return nil, newError(CodeBadAnswer, "coactive-credd sent a malformed token answer", "", 200)
	}
	if t.TokenType == "" {
		t.TokenType = "Bearer"
	}
	return &t, nil
}

// Fetch returns the profile's current token, valid for at least minTTL more seconds.
func (c *Client) Fetch(ctx context.Context, profile string, minTTL int) (*TokenInfo, error) {
	if minTTL < 0 {
		return nil, newError("bad_request", "minTTL must be 0 or more seconds", "", 0)
	}
	return c.fetch(ctx, "GET", tokenPath("/v1/token", profile, minTTL), nil)
}

// Token returns the profile's current access token.
func (c *Client) Token(ctx context.Context, profile string, minTTL int) (string, error) {
	t, err := c.Fetch(ctx, profile, minTTL)
	if err != nil {
		return "", err
	}
	return t.AccessToken, nil
}

// Refresh forces a new token; with rejectedToken != "", only if that token is still the
// current one (so many reports of one rejected token cause one login).
func (c *Client) Refresh(ctx context.Context, profile, rejectedToken string) (*TokenInfo, error) {
	var body any
	if rejectedToken != "" {
		sum := sha256.Sum256([]byte(rejectedToken))
		body = map[string]string{"rejected_token_sha256": hex.EncodeToString(sum[:])}
	}
	return c.fetch(ctx, "POST", tokenPath("/v1/token/refresh", profile, 0), body)
}

// Status returns the daemon's status (never a secret).
func (c *Client) Status(ctx context.Context) (map[string]any, error) {
	out := map[string]any{}
	err := c.call(ctx, "GET", "/v1/status", nil, &out)
	return out, err
}

// Fetch returns the profile's current token from the daemon at DefaultSocketPath().
func Fetch(ctx context.Context, profile string, minTTL int) (*TokenInfo, error) {
	c := NewClient("")
	defer c.CloseIdleConnections()
	return c.Fetch(ctx, profile, minTTL)
}

// Token returns the profile's current access token from the daemon at DefaultSocketPath().
func Token(ctx context.Context, profile string, minTTL int) (string, error) {
	t, err := Fetch(ctx, profile, minTTL)
	if err != nil {
		return "", err
	}
	return t.AccessToken, nil
}
