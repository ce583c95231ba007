package coactivehttp

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	coactivetoken "github.com/coactive-ai/coactive-credd/client_shim/go"
)

// fakeDaemon hands out tok-1, tok-2, ... on a temp Unix socket and replaces the token on a
// refresh only when the rejected hash matches the current one, as the daemon does.
type fakeDaemon struct {
	mu        sync.Mutex
	n         int
	refreshes int
}

func (f *fakeDaemon) current() string { return "tok-" + string(rune('0'+f.n)) }

func (f *fakeDaemon) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == 0 {
		f.n = 1
	}
	if r.Method == http.MethodPost {
		var body struct {
			Sum string `json:"rejected_token_sha256"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		sum := sha256.Sum256([]byte(f.current()))
		if body.Sum == hex.EncodeToString(sum[:]) {
			f.n++
			f.refreshes++
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"profile": "default", "access_token": f.current(), "token_type": "Bearer",
		"expires_at": "2030-01-02T03:04:05Z", "expires_in": 3599,
	})
}

func (f *fakeDaemon) client(t *testing.T) *coactivetoken.Client {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	c := coactivetoken.NewClient(path)
	t.Cleanup(c.CloseIdleConnections)
	return c
}

func TestTransportRetriesOnceWithANewToken(t *testing.T) {
	fd := &fakeDaemon{}
	c := fd.client(t)
	var seen []string
	var bodies []string
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.Header.Get("Authorization"))
		b, _ := io.ReadAll(r.Body)
		bodies = append(bodies, string(b))
		if r.Header.Get("Authorization") != "Bearer tok-2" {
			w.WriteHeader(401)
			return
		}
		w.WriteHeader(200)
	}))
	defer api.Close()
	hc := &http.Client{Transport: &Transport{Client: c}}
	resp, err := hc.Post(api.URL, "application/json", strings.NewReader(`{"q":1}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || strings.Join(seen, ",") != "Bearer tok-1,Bearer tok-2" {
		t.Errorf("status %d, sent %v", resp.StatusCode, seen)
	}
	if strings.Join(bodies, ",") != `{"q":1},{"q":1}` {
		t.Errorf("bodies %v", bodies)
	}
	// A token Coactive keeps rejecting: one retry, then the 401 goes back to the caller.
	seen = nil
	api.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.Header.Get("Authorization"))
		w.WriteHeader(401)
	})
	resp, err = hc.Get(api.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 || len(seen) != 2 || fd.refreshes != 2 {
		t.Errorf("status %d, sent %v, refreshes %d", resp.StatusCode, seen, fd.refreshes)
	}
}

func TestTransportDoesNotReplayAStream(t *testing.T) {
	fd := &fakeDaemon{}
	c := fd.client(t)
	calls := 0
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		w.WriteHeader(401)
	}))
	defer api.Close()
	pr, pw := io.Pipe()
	go func() { _, _ = pw.Write([]byte("data")); pw.Close() }()
	req, _ := http.NewRequest(http.MethodPut, api.URL, pr)
	resp, err := (&http.Client{Transport: &Transport{Client: c}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 || calls != 1 || fd.refreshes != 0 {
		t.Errorf("status %d, calls %d, refreshes %d", resp.StatusCode, calls, fd.refreshes)
	}
}

func TestTransportFailsWithTheDaemonsError(t *testing.T) {
	t.Setenv("COACTIVE_CREDD_AUTOSTART", "0")
	c := coactivetoken.NewClient(filepath.Join(t.TempDir(), "none.sock"))
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Error("Coactive was called without a token")
	}))
	defer api.Close()
	_, err := (&http.Client{Transport: &Transport{Client: c}}).Get(api.URL)
	var e *coactivetoken.Error
	if !errors.As(err, &e) || e.ExitCode != coactivetoken.ExitUnreachable {
		t.Fatalf("got %v", err)
	}
}
