package coactivetoken

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const odd = "cat_Odd-chars.~+/="

// standIn serves handler on a temp Unix socket, as the daemon would.
func standIn(t *testing.T, handler http.HandlerFunc) *Client {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(handler)
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	c := NewClient(path)
	t.Cleanup(c.CloseIdleConnections)
	return c
}

func answer(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func tokenAnswer(profile, token string) map[string]any {
	return map[string]any{
		"profile": profile, "access_token": token, "token_type": "Bearer",
		"expires_at": "2030-01-02T03:04:05Z", "expires_in": 3599,
	}
}

func TestFetchSendsProfileAndMinTTL(t *testing.T) {
	var got string
	c := standIn(t, func(w http.ResponseWriter, r *http.Request) {
		got = r.URL.RequestURI()
		answer(w, 200, tokenAnswer(r.URL.Query().Get("profile"), odd))
	})
	tok, err := c.Fetch(context.Background(), "prod", 600)
	if err != nil {
		t.Fatal(err)
	}
	if got != "/v1/token?min_ttl=600&profile=prod" {
		t.Errorf("request %q", got)
	}
	want := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	if tok.AccessToken != odd || tok.Profile != "prod" || !tok.ExpiresAt.Equal(want) || tok.ExpiresIn != 3599 {
		t.Errorf("token %+v", *tok)
	}
	if shown := fmt.Sprintf("%v %+v %#v %s", tok, *tok, *tok, tok); strings.Contains(shown, odd) {
		t.Errorf("formatting shows the token: %s", shown)
	}
}

func TestErrorAnswersMapToExitCodes(t *testing.T) {
	cases := []struct {
		code   string
		status int
		exit   int
	}{
		{"bad_request", 400, 2}, {"forbidden", 403, 2}, {"unknown_profile", 404, 4},
		{"reauth_required", 424, 5}, {"upstream_unavailable", 503, 6}, {"locked", 423, 7},
	}
	for _, tc := range cases {
		c := standIn(t, func(w http.ResponseWriter, r *http.Request) {
			answer(w, tc.status, map[string]any{"error": map[string]string{
				"code": tc.code, "message": "m " + tc.code, "hint": "do this"}})
		})
		_, err := c.Token(context.Background(), "", 0)
		var e *Error
		if !errors.As(err, &e) {
			t.Fatalf("%s: %v", tc.code, err)
		}
		if e.Code != tc.code || e.ExitCode != tc.exit || e.Status != tc.status || e.Error() != "m "+tc.code+" (do this)" {
			t.Errorf("%s: %+v", tc.code, e)
		}
	}
}

func TestUnreachableFailsFast(t *testing.T) {
	t.Setenv("COACTIVE_CREDD_AUTOSTART", "0")
	c := NewClient(filepath.Join(t.TempDir(), "none.sock"))
	start := time.Now()
	_, err := c.Token(context.Background(), "", 0)
	var e *Error
	if !errors.As(err, &e) || e.ExitCode != ExitUnreachable || !strings.Contains(e.Error(), "coactive-credd serve") {
		t.Fatalf("got %v", err)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("took %s", d)
	}
}

func TestDefaultSocketPath(t *testing.T) {
	t.Setenv("COACTIVE_CREDD_SOCKET", "/x/s")
	t.Setenv("COACTIVE_CREDD_HOME", "/h")
	if p := DefaultSocketPath(); p != "/x/s" {
		t.Error(p)
	}
	t.Setenv("COACTIVE_CREDD_SOCKET", "")
	if p := DefaultSocketPath(); p != "/h/credd.sock" {
		t.Error(p)
	}
	t.Setenv("COACTIVE_PROFILE", "")
	if DefaultProfile() != "default" {
		t.Error(DefaultProfile())
	}
}

func TestAutostartEnabled(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", "")
	t.Setenv("COACTIVE_CREDD_AUTOSTART", "")
	if !AutostartEnabled() {
		t.Fatal("off with no service installed")
	}
	t.Setenv("COACTIVE_CREDD_AUTOSTART", "0")
	if AutostartEnabled() {
		t.Fatal("on with COACTIVE_CREDD_AUTOSTART=0")
	}
	t.Setenv("COACTIVE_CREDD_AUTOSTART", "")
	units := filepath.Join(home, "xdg", "systemd", "user")
	if err := os.MkdirAll(units, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(units, "coactive-credd.service"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(home, "xdg"))
	if AutostartEnabled() {
		t.Fatal("on with a user service installed")
	}
	t.Setenv("COACTIVE_CREDD_AUTOSTART", "1")
	if !AutostartEnabled() {
		t.Fatal("off with COACTIVE_CREDD_AUTOSTART=1")
	}
}

func TestUnreachableKeepsItsCause(t *testing.T) {
	t.Setenv("COACTIVE_CREDD_AUTOSTART", "0")
	_, err := NewClient(filepath.Join(t.TempDir(), "none.sock")).Token(context.Background(), "", 0)
	if !errors.Is(err, syscall.ENOENT) || !noDaemon(err) {
		t.Fatalf("got %v", err)
	}
}

// TestDaemonUIDAsTheVectorsSay: COACTIVE_CREDD_DAEMON_UID is parsed as every client parses
// it (tests/vectors/safe_path.json, daemon_uid): ASCII digits only, else exit 2.
func TestDaemonUIDAsTheVectorsSay(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "tests", "vectors", "safe_path.json"))
	if err != nil {
		t.Fatal(err)
	}
	var vectors struct {
		DaemonUID struct {
			Valid   map[string]int64 `json:"valid"`
			Invalid []string         `json:"invalid"`
		} `json:"daemon_uid"`
	}
	if err := json.Unmarshal(raw, &vectors); err != nil {
		t.Fatal(err)
	}
	for value, want := range vectors.DaemonUID.Valid {
		t.Setenv("COACTIVE_CREDD_DAEMON_UID", value)
		if got, err := daemonUID(); err != nil || got != want {
			t.Errorf("%q: got %d, %v; want %d", value, got, err, want)
		}
	}
	for _, value := range vectors.DaemonUID.Invalid {
		t.Setenv("COACTIVE_CREDD_DAEMON_UID", value)
		_, err := daemonUID()
		var e *Error
		if !errors.As(err, &e) || e.ExitCode != ExitUsage || strings.Contains(e.Error(), value) {
			t.Errorf("%q: got %v; want a usage error that does not repeat it", value, err)
		}
	}
}
