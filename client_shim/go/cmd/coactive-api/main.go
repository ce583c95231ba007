// Command coactive-api makes one Coactive API call through the coactive-credd daemon's
// socket (coactivehttp.SocketTransport): the daemon adds the token, so this program never
// holds one.
//
//	coactive-api [-profile P] METHOD /api/PATH [< BODY]
//
// The answer's body goes to standard output; the status line to standard error. Exit 0 for a
// 2xx answer, 1 for any other, 3 when the daemon cannot be reached (or is not trusted).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"

	coactivetoken "github.com/coactive-ai/coactive-credd/client_shim/go"
	"github.com/coactive-ai/coactive-credd/client_shim/go/coactivehttp"
)

func main() {
	profile := flag.String("profile", "", "profile (default $COACTIVE_PROFILE, else default)")
	flag.Parse()
	if flag.NArg() != 2 {
		fmt.Fprintln(os.Stderr, "usage: coactive-api [-profile P] METHOD /api/PATH [< BODY]")
		os.Exit(2)
	}
	var body io.Reader
	if st, err := os.Stdin.Stat(); err == nil && st.Mode()&os.ModeCharDevice == 0 {
		body = os.Stdin
	}
	req, err := http.NewRequest(flag.Arg(0), "http://localhost"+flag.Arg(1), body)
	if err != nil {
		fmt.Fprintln(os.Stderr, "coactive-api:", err)
		os.Exit(2)
	}
	client := &http.Client{
		Transport: coactivehttp.SocketTransport("", *profile),
		// Redirects come back as they are, as the daemon passes them.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		var e *coactivetoken.Error
		if errors.As(err, &e) {
			fmt.Fprintln(os.Stderr, "coactive-api:", e)
			os.Exit(e.ExitCode)
		}
		fmt.Fprintln(os.Stderr, "coactive-api:", err)
		os.Exit(3)
	}
	defer resp.Body.Close()
	fmt.Fprintln(os.Stderr, resp.Status)
	if _, err := io.Copy(os.Stdout, resp.Body); err != nil {
		fmt.Fprintln(os.Stderr, "coactive-api: the answer broke off:", err)
		os.Exit(1)
	}
	if resp.StatusCode/100 != 2 {
		os.Exit(1)
	}
}
