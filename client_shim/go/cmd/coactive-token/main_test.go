package main

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
)

func TestRunPrintsTokenAndMapsErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Query().Get("profile") == "nope" {
			w.WriteHeader(404)
			_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{
				"code": "unknown_profile", "message": "no profile named nope", "hint": "log in"}})
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"profile": "default", "access_token": "t.o+k/=",
			"token_type": "Bearer", "expires_at": "2030-01-01T00:00:00Z", "expires_in": 60})
	}))
	srv.Listener = l
	srv.Start()
	defer srv.Close()
	t.Setenv("COACTIVE_CREDD_SOCKET", path)

	for _, tc := range []struct {
		args           []string
		code           int
		stdout, stderr string
	}{
		{nil, 0, "t.o+k/=\n", ""},
		{[]string{"--header"}, 0, "Authorization: Bearer t.o+k/=\n", ""},
		{[]string{"--profile", "nope"}, 4, "", "coactive-token: no profile named nope (log in)\n"},
		{[]string{"--min-ttl", "soon"}, 2, "", "coactive-token: --min-ttl must be a whole number of seconds (see: coactive-token --help)\n"},
	} {
		var out, errb bytes.Buffer
		code := run(tc.args, &out, &errb)
		if code != tc.code || out.String() != tc.stdout || errb.String() != tc.stderr {
			t.Errorf("%v: code %d stdout %q stderr %q", tc.args, code, out.String(), errb.String())
		}
	}
}
