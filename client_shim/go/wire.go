package coactivetoken

// The HTTP/1.1 the daemon speaks, by hand: one request line and a few headers out; the status
// line, the headers and a Content-Length (or chunked) body back. Written here instead of using
// net/http so that a program that only needs a token (the coactive-token CLI, say) does not
// link, and start up, a whole HTTP stack.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

const (
	maxIdleConns    = 2                // kept-alive connections per Client
	idleConnTimeout = 30 * time.Second // well inside the daemon's own 60 s
	maxHeaderLines  = 64
	maxBody         = 64 << 20
)

var errMalformed = errors.New("malformed HTTP answer")

// wireConn is one connection to the daemon.
type wireConn struct {
	conn  net.Conn
	br    *bufio.Reader
	since time.Time // when it went idle
}

// validRequest: a method token and an origin-form path, nothing that could end the line.
func validRequest(method, path string) bool {
	if method == "" || !strings.HasPrefix(path, "/") {
		return false
	}
	for _, c := range method {
		if c < 'A' || c > 'Z' {
			return false
		}
	}
	for i := 0; i < len(path); i++ {
		if path[i] <= ' ' || path[i] >= 0x7f {
			return false
		}
	}
	return true
}

// roundTrip sends one request and reads its answer, by deadline (zero: none) and before ctx
// ends. answered says whether any byte of an answer arrived: a kept-alive connection the
// daemon closed while idle fails without one, and the request can be sent again on a new
// connection. keep says whether the connection can carry another request.
func (w *wireConn) roundTrip(ctx context.Context, deadline time.Time, method, path string, body []byte) (status int, data []byte, keep, answered bool, err error) {
	if d, ok := ctx.Deadline(); ok && (deadline.IsZero() || d.Before(deadline)) {
		deadline = d
	}
	if err := w.conn.SetDeadline(deadline); err != nil {
		return 0, nil, false, false, err
	}
	if done := ctx.Done(); done != nil { // only a context that can end early needs watching
		stop, stopped := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(stopped)
			select {
			case <-done:
				_ = w.conn.SetDeadline(time.Unix(1, 0)) // wakes the read or write below
			case <-stop:
			}
		}()
		defer func() {
			close(stop)
			<-stopped
			if err != nil && ctx.Err() != nil {
				err = ctx.Err()
			}
		}()
	}

	var req strings.Builder
	req.Grow(128 + len(body))
	req.WriteString(method + " " + path + " HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n")
	if body != nil {
		req.WriteString("Content-Type: application/json\r\n")
	}
	if body != nil || method != "GET" && method != "HEAD" {
		req.WriteString("Content-Length: " + strconv.Itoa(len(body)) + "\r\n")
	}
	req.WriteString("\r\n")
	req.Write(body)
	if _, err := io.WriteString(w.conn, req.String()); err != nil {
		return 0, nil, false, false, err
	}

	if _, err := w.br.Peek(1); err != nil {
		return 0, nil, false, false, err
	}
	var length int64
	var chunked bool
	for {
		status, keep, length, chunked, err = readHead(w.br)
		if err != nil {
			return 0, nil, false, true, err
		}
		if status >= 200 {
			break
		}
		// 1xx: an interim answer, the real one follows.
	}
	switch {
	case method == "HEAD" || status == 204 || status == 304:
		data = []byte{}
	case chunked:
		data, err = readChunked(w.br)
	case length >= 0:
		if length > maxBody {
			return 0, nil, false, true, errMalformed
		}
		data = make([]byte, length)
		_, err = io.ReadFull(w.br, data)
	default: // the body runs to the end of the connection
		keep = false
		data, err = io.ReadAll(io.LimitReader(w.br, maxBody+1))
		if err == nil && len(data) > maxBody {
			err = errMalformed
		}
	}
	if err != nil {
		return 0, nil, false, true, err
	}
	return status, data, keep, true, nil
}

// readHead reads a status line and headers. length is -1 when there is no Content-Length.
func readHead(br *bufio.Reader) (status int, keep bool, length int64, chunked bool, err error) {
	line, err := readLine(br)
	if err != nil {
		return 0, false, 0, false, err
	}
	proto, rest, _ := strings.Cut(line, " ")
	code, _, _ := strings.Cut(rest, " ")
	if !strings.HasPrefix(proto, "HTTP/1.") || len(code) != 3 {
		return 0, false, 0, false, errMalformed
	}
	if status, err = strconv.Atoi(code); err != nil || status < 100 {
		return 0, false, 0, false, errMalformed
	}
	keep, length = proto == "HTTP/1.1", -1
	for n := 0; ; n++ {
		line, err := readLine(br)
		if err != nil {
			return 0, false, 0, false, err
		}
		if line == "" {
			return status, keep, length, chunked, nil
		}
		if n == maxHeaderLines {
			return 0, false, 0, false, errMalformed
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			return 0, false, 0, false, errMalformed
		}
		value = strings.TrimSpace(value)
		switch strings.ToLower(name) {
		case "content-length":
			n, err := strconv.ParseInt(value, 10, 64)
			if err != nil || n < 0 || length >= 0 && n != length {
				return 0, false, 0, false, errMalformed
			}
			length = n
		case "transfer-encoding":
			chunked = strings.EqualFold(value, "chunked")
			if !chunked {
				return 0, false, 0, false, errMalformed // no other coding is ever sent here
			}
		case "connection":
			for _, opt := range strings.Split(value, ",") {
				switch strings.ToLower(strings.TrimSpace(opt)) {
				case "close":
					keep = false
				case "keep-alive":
					keep = true
				}
			}
		}
	}
}

// readLine reads one CRLF- (or LF-) terminated line of at most the reader's buffer size.
func readLine(br *bufio.Reader) (string, error) {
	b, err := br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		return "", errMalformed
	}
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return "", err
	}
	b = b[:len(b)-1]
	if len(b) > 0 && b[len(b)-1] == '\r' {
		b = b[:len(b)-1]
	}
	return string(b), nil
}

func readChunked(br *bufio.Reader) ([]byte, error) {
	var data []byte
	for {
		line, err := readLine(br)
		if err != nil {
			return nil, err
		}
		size, _, _ := strings.Cut(line, ";")
		n, err := strconv.ParseInt(strings.TrimSpace(size), 16, 64)
		if err != nil || n < 0 || int64(len(data))+n > maxBody {
			return nil, errMalformed
		}
		if n == 0 {
			for { // trailers, up to the blank line
				line, err := readLine(br)
				if err != nil {
					return nil, err
				}
				if line == "" {
					return data, nil
				}
			}
		}
		start := len(data)
		data = append(data, make([]byte, n)...)
		if _, err := io.ReadFull(br, data[start:]); err != nil {
			return nil, err
		}
		if line, err := readLine(br); err != nil || line != "" {
			return nil, errMalformed
		}
	}
}

// conn returns a kept-alive connection (reused true) or a new one.
func (c *Client) conn(ctx context.Context) (w *wireConn, reused bool, err error) {
	c.mu.Lock()
	for len(c.idle) > 0 {
		w = c.idle[len(c.idle)-1]
		c.idle = c.idle[:len(c.idle)-1]
		if time.Since(w.since) < idleConnTimeout {
			c.mu.Unlock()
			return w, true, nil
		}
		w.conn.Close()
	}
	c.mu.Unlock()
	if err := verifyFolder(c.socketPath()); err != nil {
		return nil, false, err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.socketPath())
	if err != nil {
		return nil, false, err
	}
	if err := verifyPeer(conn, c.socketPath()); err != nil {
		conn.Close()
		return nil, false, err
	}
	return &wireConn{conn: conn, br: bufio.NewReaderSize(conn, 4096)}, false, nil
}

// release keeps w for the next request, or closes it.
func (c *Client) release(w *wireConn, keep bool) {
	if keep {
		c.mu.Lock()
		if len(c.idle) < maxIdleConns {
			w.since = time.Now()
			c.idle = append(c.idle, w)
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
	}
	w.conn.Close()
}

// CloseIdleConnections closes the kept-alive connections, if any.
func (c *Client) CloseIdleConnections() {
	c.mu.Lock()
	idle := c.idle
	c.idle = nil
	c.mu.Unlock()
	for _, w := range idle {
		w.conn.Close()
	}
}

// exchange sends one request over a kept-alive or new connection; a kept-alive one that the
// daemon closed meanwhile is replaced by a new one, and the request sent again.
func (c *Client) exchange(ctx context.Context, deadline time.Time, method, path string, body []byte) (int, []byte, error) {
	if !validRequest(method, path) {
		return 0, nil, fmt.Errorf("coactivetoken: invalid request %q %q", method, path)
	}
	for {
		w, reused, err := c.conn(ctx)
		if err != nil {
			var e *Error
			if errors.As(err, &e) { // untrusted: already says why; nothing was sent
				return 0, nil, e
			}
			return 0, nil, unreachable(c.socketPath(), err)
		}
		status, data, keep, answered, err := w.roundTrip(ctx, deadline, method, path, body)
		if err != nil {
			w.conn.Close()
			if reused && !answered && ctx.Err() == nil {
				continue
			}
			return 0, nil, unreachable(c.socketPath(), err)
		}
		c.release(w, keep)
		return status, data, nil
	}
}
