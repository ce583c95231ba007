package coactivetoken

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// rawDaemon serves each connection to a temp Unix socket with handle (n counts connections
// from 1), for answers net/http's server would not write.
func rawDaemon(t *testing.T, handle func(n int, conn net.Conn, br *bufio.Reader)) *Client {
	t.Helper()
	path := filepath.Join(t.TempDir(), "raw.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 1; ; n++ {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func(n int) {
				defer wg.Done()
				defer conn.Close()
				handle(n, conn, bufio.NewReader(conn))
			}(n)
		}
	}()
	c := NewClient(path)
	c.DisableAutostart = true
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// readRequest reads one request's head (and a Content-Length body) and returns its first line.
func readRequest(br *bufio.Reader) (string, error) {
	first, err := br.ReadString('\n')
	if err != nil {
		return "", err
	}
	length := 0
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return "", err
		}
		if line == "\r\n" {
			break
		}
		if name, value, _ := strings.Cut(line, ":"); strings.EqualFold(name, "content-length") {
			length, _ = strconv.Atoi(strings.TrimSpace(value))
		}
	}
	_, err = io.CopyN(io.Discard, br, int64(length))
	return strings.TrimSpace(first), err
}

const tokenBody = `{"profile":"default","access_token":"cat_raw","token_type":"Bearer","expires_at":"2030-01-01T00:00:00Z","expires_in":3600}`

func TestRefreshSendsTheRejectedHashAsJSON(t *testing.T) {
	var got []string
	c := standIn(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = append(got, r.Method+" "+r.URL.RequestURI()+" "+r.Header.Get("Content-Type")+" "+
			r.Header.Get("Content-Length")+" "+string(b))
		answer(w, 200, tokenAnswer("prod", "cat_new"))
	})
	if _, err := c.Refresh(context.Background(), "prod", "cat_old"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Refresh(context.Background(), "prod", ""); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("cat_old"))
	body := `{"rejected_token_sha256":"` + hex.EncodeToString(sum[:]) + `"}`
	want := []string{
		"POST /v1/token/refresh?profile=prod application/json " + itoa(len(body)) + " " + body,
		"POST /v1/token/refresh?profile=prod  0 ",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("sent\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestOneConnectionServesManyRequests(t *testing.T) {
	var conns atomic.Int32
	c := rawDaemon(t, func(n int, conn net.Conn, br *bufio.Reader) {
		conns.Add(1)
		for {
			if _, err := readRequest(br); err != nil {
				return
			}
			_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"+
				"Content-Length: "+itoa(len(tokenBody))+"\r\n\r\n"+tokenBody)
		}
	})
	for i := 0; i < 5; i++ {
		if tok, err := c.Token(context.Background(), "", 0); err != nil || tok != "cat_raw" {
			t.Fatalf("%q %v", tok, err)
		}
	}
	if conns.Load() != 1 {
		t.Errorf("%d connections for 5 requests in a row", conns.Load())
	}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Token(context.Background(), "", 0); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := len(c.idle); n > maxIdleConns {
		t.Errorf("%d idle connections kept", n)
	}
}

func TestAConnectionTheDaemonClosedWhileIdleIsReplaced(t *testing.T) {
	c := rawDaemon(t, func(n int, conn net.Conn, br *bufio.Reader) {
		if _, err := readRequest(br); err != nil {
			return
		}
		_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: "+itoa(len(tokenBody))+"\r\n\r\n"+tokenBody)
		if n == 1 {
			_, _ = readRequest(br) // the next request arrives as the daemon closes it
		}
	})
	for i := 0; i < 3; i++ {
		if tok, err := c.Token(context.Background(), "", 0); err != nil || tok != "cat_raw" {
			t.Fatalf("request %d: %q %v", i, tok, err)
		}
	}
}

func TestChunkedCloseDelimitedAndInterimAnswers(t *testing.T) {
	half := len(tokenBody) / 2
	answers := []string{
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
			hex16(half) + ";ext=1\r\n" + tokenBody[:half] + "\r\n" +
			hex16(len(tokenBody)-half) + "\r\n" + tokenBody[half:] + "\r\n0\r\nX-Trailer: y\r\n\r\n",
		"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + tokenBody,
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: " +
			itoa(len(tokenBody)) + "\r\n\r\n" + tokenBody,
	}
	for i, a := range answers {
		c := rawDaemon(t, func(n int, conn net.Conn, br *bufio.Reader) {
			if _, err := readRequest(br); err == nil {
				_, _ = io.WriteString(conn, a)
			}
		})
		if tok, err := c.Token(context.Background(), "", 0); err != nil || tok != "cat_raw" {
			t.Errorf("answer %d: %q %v", i, tok, err)
		}
		if i > 0 && len(c.idle) != 0 {
			t.Errorf("answer %d: a connection the daemon closes was kept", i)
		}
	}
}

func TestMalformedAnswersAreErrorsNotHangs(t *testing.T) {
	for _, a := range []string{
		"garbage\r\n\r\n",
		"HTTP/1.1 2000 OK\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
		"HTTP/1.1 200 OK\r\nX: " + strings.Repeat("x", 5000) + "\r\n\r\n",
	} {
		c := rawDaemon(t, func(n int, conn net.Conn, br *bufio.Reader) {
			if _, err := readRequest(br); err == nil {
				_, _ = io.WriteString(conn, a)
			}
		})
		c.Timeout = 2 * time.Second
		start := time.Now()
		_, err := c.Token(context.Background(), "", 0)
		var e *Error
		if !errors.As(err, &e) || e.ExitCode != ExitUnreachable || time.Since(start) > time.Second {
			t.Errorf("%.40q: %v after %s", a, err, time.Since(start))
		}
	}
}

func TestASilentDaemonTimesOutAndACancelStopsTheWait(t *testing.T) {
	c := rawDaemon(t, func(n int, conn net.Conn, br *bufio.Reader) {
		_, _ = io.Copy(io.Discard, br) // reads, never answers
	})
	c.Timeout = 100 * time.Millisecond
	start := time.Now()
	_, err := c.Token(context.Background(), "", 0)
	if err == nil || !strings.Contains(err.Error(), "did not answer in time") || time.Since(start) > time.Second {
		t.Errorf("timeout: %v after %s", err, time.Since(start))
	}
	c.Timeout = 0
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start = time.Now()
	_, err = c.Token(ctx, "", 0)
	if !errors.Is(err, context.Canceled) || time.Since(start) > time.Second {
		t.Errorf("cancel: %v after %s", err, time.Since(start))
	}
}

func TestDoRefusesWhatCouldReshapeTheRequest(t *testing.T) {
	c := rawDaemon(t, func(n int, conn net.Conn, br *bufio.Reader) {
		t.Error("a connection was made")
	})
	for _, r := range [][2]string{
		{"GET", "/v1/token?profile=a HTTP/1.1\r\nX: y"},
		{"GET", "/v1/token?profile=a b"},
		{"GET", "v1/token"},
		{"GET\r\n", "/healthz"},
		{"get", "/healthz"},
	} {
		if _, _, err := c.Do(context.Background(), r[0], r[1], nil); err == nil {
			t.Errorf("%q %q was sent", r[0], r[1])
		}
	}
}

func TestTheCoreAndTheCLIDoNotLinkNetHTTP(t *testing.T) {
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	out, err := exec.Command(goTool, "list", "-deps", ".", "./cmd/coactive-token").Output()
	if err != nil {
		t.Fatalf("go list: %v (the claim cannot be checked without it)", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep == "net/http" || strings.HasPrefix(dep, "net/http/") || dep == "crypto/tls" {
			t.Errorf("depends on %s", dep)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func hex16(n int) string { return strconv.FormatInt(int64(n), 16) }
