// Command coactive-token prints the current Coactive access token from coactive-credd.
//
//	coactive-token [--profile P] [--min-ttl SECONDS] [--json | --header]
//	coactive-token [--profile P] --watch    # a JSON line per token rotation or state change
//
// Exit codes: 0 ok, 2 usage, 3 daemon not reachable, 4 unknown profile, 5 re-login needed,
// 6 Coactive unavailable, 7 vault locked. Errors are one line on stderr. The flags, the help
// text and the usage errors are those of every coactive-token shim
// (tests/vectors/conformance.json), so they are parsed by hand rather than with package flag,
// which would also take -profile and --json=false.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	coactivetoken "github.com/coactive-ai/coactive-credd/client_shim/go"
)

const prog = "coactive-token"

const help = `usage: %[1]s [--profile P] [--min-ttl SECONDS] [--json | --header]
       %[1]s [--profile P] --watch

Print the current Coactive access token held by coactive-credd, and nothing else.
  --profile P        profile name (default: $COACTIVE_PROFILE, else "default")
  --min-ttl SECONDS  the token must stay valid at least this long (default 0)
  --json             print the daemon's JSON answer (profile, access_token, expires_at, expires_in)
  --header           print "Authorization: Bearer <token>"
  --watch            print a JSON line each time the token is replaced or its state changes
                     ({"profile","state","expires_at","token_sha256"}, never the token);
                     runs until the daemon stops (then exits 3)
  --version          print the version and exit
  -h, --help         print this help and exit
Exit codes: 0 ok, 2 usage, 3 daemon not reachable, 4 unknown profile, 5 re-login needed,
6 Coactive unavailable, 7 vault locked; errors are one line on stderr.
Environment: COACTIVE_PROFILE; COACTIVE_CREDD_SOCKET (else the daemon's default path, under
COACTIVE_CREDD_HOME when set); COACTIVE_CREDD_AUTOSTART (0: never start a daemon, 1: always
may; unset: unless a user service is installed); COACTIVE_CREDD_COMMAND (the coactive-credd
to start).
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type options struct {
	profile, minTTL string
	asJSON, header  bool
	watch           bool
}

// parse reads the arguments left to right; done means exit with code now.
func parse(args []string, stdout, stderr io.Writer) (o options, code int, done bool) {
	usage := func(msg string) (options, int, bool) {
		fmt.Fprintf(stderr, "%s: %s (see: %s --help)\n", prog, msg, prog)
		return o, coactivetoken.ExitUsage, true
	}
	o.minTTL = "0"
	for i := 0; i < len(args); i++ {
		arg, value, inline := args[i], "", false
		if strings.HasPrefix(arg, "--profile=") || strings.HasPrefix(arg, "--min-ttl=") {
			arg, value, _ = strings.Cut(arg, "=")
			inline = true
		}
		switch arg {
		case "--profile", "--min-ttl":
			if !inline {
				if i+1 >= len(args) {
					if arg == "--profile" {
						return usage("--profile needs a name")
					}
					return usage("--min-ttl needs a number of seconds")
				}
				i++
				value = args[i]
			}
			if arg == "--profile" {
				if value == "" {
					return usage("--profile needs a name")
				}
				o.profile = value
			} else {
				o.minTTL = value
			}
		case "--json":
			o.asJSON = true
		case "--header":
			o.header = true
		case "--watch":
			o.watch = true
		case "-h", "--help":
			fmt.Fprintf(stdout, help, prog)
			return o, coactivetoken.ExitOK, true
		case "--version":
			fmt.Fprintf(stdout, "%s %s\n", prog, coactivetoken.Version)
			return o, coactivetoken.ExitOK, true
		default:
			return usage("unknown argument: " + arg)
		}
	}
	if o.minTTL == "" || strings.Trim(o.minTTL, "0123456789") != "" {
		return usage("--min-ttl must be a whole number of seconds")
	}
	if o.asJSON && o.header {
		return usage("--json and --header cannot be used together")
	}
	return o, 0, false
}

func run(args []string, stdout, stderr io.Writer) int {
	o, code, done := parse(args, stdout, stderr)
	if done {
		return code
	}
	if o.watch {
		return follow(o.profile, stdout, stderr)
	}
	ttl := 0
	for _, c := range o.minTTL {
		if ttl > 1<<30 {
			break // the daemon refuses it; no overflow here
		}
		ttl = ttl*10 + int(c-'0')
	}
	tok, err := coactivetoken.Fetch(context.Background(), o.profile, ttl)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %s\n", prog, err)
		var e *coactivetoken.Error
		if errors.As(err, &e) {
			return e.ExitCode
		}
		return 1
	}
	switch {
	case o.asJSON:
		out, _ := json.Marshal(map[string]any{
			"profile":      tok.Profile,
			"access_token": tok.AccessToken,
			"token_type":   tok.TokenType,
			"expires_at":   tok.ExpiresAt.UTC().Format(time.RFC3339),
			"expires_in":   tok.ExpiresIn,
		})
		fmt.Fprintf(stdout, "%s\n", out)
	case o.header:
		fmt.Fprintf(stdout, "Authorization: Bearer %s\n", tok.AccessToken)
	default:
		fmt.Fprintf(stdout, "%s\n", tok.AccessToken)
	}
	return coactivetoken.ExitOK
}

// follow prints each event of GET /v1/events as a JSON line until the daemon stops (exit 3).
func follow(profile string, stdout, stderr io.Writer) int {
	events, err := coactivetoken.Watch(context.Background(), profile)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %s\n", prog, err)
		var e *coactivetoken.Error
		if errors.As(err, &e) {
			return e.ExitCode
		}
		return 1
	}
	for ev := range events {
		out, _ := json.Marshal(ev)
		fmt.Fprintf(stdout, "%s\n", out)
	}
	fmt.Fprintf(stderr, "%s: coactive-credd stopped or closed the event stream (start it with: coactive-credd serve)\n", prog)
	return coactivetoken.ExitUnreachable
}
