package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	coactivetoken "github.com/coactive-ai/coactive-credd/client_shim/go"
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

func TestParseFollowsTheSharedCommandLine(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{[]string{"--version"}, 0, "coactive-token " + coactivetoken.Version + "\n", ""},
		{[]string{"--json", "--header"}, 2, "", "coactive-token: --json and --header cannot be used together (see: coactive-token --help)\n"},
		{[]string{"--prof", "x"}, 2, "", "coactive-token: unknown argument: --prof (see: coactive-token --help)\n"},
		{[]string{"-profile", "x"}, 2, "", "coactive-token: unknown argument: -profile (see: coactive-token --help)\n"},
		{[]string{"--json=false"}, 2, "", "coactive-token: unknown argument: --json=false (see: coactive-token --help)\n"},
		{[]string{"--profile="}, 2, "", "coactive-token: --profile needs a name (see: coactive-token --help)\n"},
		{[]string{"--min-ttl"}, 2, "", "coactive-token: --min-ttl needs a number of seconds (see: coactive-token --help)\n"},
		{[]string{"--bogus", "--help"}, 2, "", "coactive-token: unknown argument: --bogus (see: coactive-token --help)\n"},
	} {
		var out, errb bytes.Buffer
		code := run(tc.args, &out, &errb)
		if code != tc.code || out.String() != tc.stdout || errb.String() != tc.stderr {
			t.Errorf("%v: code %d stdout %q stderr %q", tc.args, code, out.String(), errb.String())
		}
	}
	var out bytes.Buffer
	if code := run([]string{"--profile", "x", "-h"}, &out, io.Discard); code != 0 ||
		!strings.HasPrefix(out.String(), "usage: coactive-token [--profile P]") {
		t.Errorf("-h: code %d stdout %q", code, out.String())
	}
}
