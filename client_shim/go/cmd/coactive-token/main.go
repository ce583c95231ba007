// Command coactive-token prints the current Coactive access token from coactive-credd.
//
//	coactive-token [--profile P] [--min-ttl SECONDS] [--json | --header]
//	coactive-token [--profile P] --watch    # a JSON line per token rotation or state change
//
// Exit codes: 0 ok, 2 usage, 3 daemon not reachable, 4 unknown profile, 5 re-login needed,
// 6 Coactive unavailable, 7 vault locked. Errors are one line on stderr.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	coactivetoken "github.com/coactive-ai/coactive-credd/client_shim/go"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	usage := func(msg string) int {
		fmt.Fprintf(stderr, "coactive-token: %s (see: coactive-token --help)\n", msg)
		return coactivetoken.ExitUsage
	}
	fs := flag.NewFlagSet("coactive-token", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	profile := fs.String("profile", "", "profile name (default: $COACTIVE_PROFILE or default)")
	minTTL := fs.String("min-ttl", "0", "the token must stay valid at least this many seconds")
	asJSON := fs.Bool("json", false, "print the daemon's JSON answer")
	header := fs.Bool("header", false, "print 'Authorization: Bearer <token>'")
	watch := fs.Bool("watch", false, "print a JSON line per token rotation or state change (never the token)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stdout, "usage: coactive-token [--profile P] [--min-ttl SECONDS] [--json | --header]")
			fmt.Fprintln(stdout, "       coactive-token [--profile P] --watch")
			return coactivetoken.ExitOK
		}
		return usage(err.Error())
	}
	if fs.NArg() > 0 {
		return usage("unknown argument: " + fs.Arg(0))
	}
	ttl, err := strconv.Atoi(*minTTL)
	if err != nil || ttl < 0 {
		return usage("--min-ttl must be a whole number of seconds")
	}
	if *asJSON && *header {
		return usage("--json and --header cannot be combined")
	}
	if *watch {
		return follow(*profile, stdout, stderr)
	}
	tok, err := coactivetoken.Fetch(context.Background(), *profile, ttl)
	if err != nil {
		fmt.Fprintf(stderr, "coactive-token: %s\n", err)
		var e *coactivetoken.Error
		if errors.As(err, &e) {
			return e.ExitCode
		}
		return 1
	}
	switch {
	case *asJSON:
		out, _ := json.Marshal(map[string]any{
			"profile":      tok.Profile,
			"access_token": tok.AccessToken,
			"token_type":   tok.TokenType,
			"expires_at":   tok.ExpiresAt.UTC().Format(time.RFC3339),
			"expires_in":   tok.ExpiresIn,
		})
		fmt.Fprintf(stdout, "%s\n", out)
	case *header:
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
		fmt.Fprintf(stderr, "coactive-token: %s\n", err)
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
	fmt.Fprintln(stderr, "coactive-token: coactive-credd stopped or closed the event stream (start it with: coactive-credd serve)")
	return coactivetoken.ExitUnreachable
}
