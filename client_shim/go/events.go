package coactivetoken

// Following GET /v1/events (server-sent events): a channel of token rotations and state
// changes, so a long-running program fetches a new token when one exists instead of polling.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Event is one change of a profile's token or state. It never holds the token: fetch it
// with Fetch when TokenSHA256 changes.
type Event struct {
	Profile     string `json:"profile"`
	State       string `json:"state"`        // valid, refreshing, expired, reauth_required, locked, no_token
	ExpiresAt   string `json:"expires_at"`   // RFC 3339 UTC; "" when there is no token
	TokenSHA256 string `json:"token_sha256"` // hex SHA-256 of the token; "" when there is none
}

// watchSilence: the daemon sends a heartbeat every 15 s; this long without a byte means it is gone.
const watchSilence = 60 * time.Second

// Watch follows the daemon's GET /v1/events for profile ("" for every profile). The first
// events give each profile's current state, then one comes per change. The channel is closed
// when the stream ends: ctx is done, the daemon stopped, or it said nothing for 60 s; follow
// again (after a pause) to go on. The error is for a stream that could not be opened:
// an *Error like Fetch's.
func (c *Client) Watch(ctx context.Context, profile string) (<-chan Event, error) {
	sock := c.socketPath()
	if err := verifyFolder(sock); err != nil {
		return nil, err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return nil, unreachable(sock, err)
	}
	if err := verifyPeer(conn, sock); err != nil { // before a byte is sent
		conn.Close()
		return nil, err
	}
	path := "/v1/events"
	if profile != "" {
		path += "?profile=" + url.QueryEscape(profile)
	}
	_ = conn.SetDeadline(time.Now().Add(watchSilence))
	req := "GET " + path + " HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n"
	br := bufio.NewReader(conn)
	var status int
	var length int64
	var chunked bool
	if _, err = io.WriteString(conn, req); err == nil {
		status, _, length, chunked, err = readHead(br)
	}
	if err != nil {
		conn.Close()
		return nil, unreachable(sock, err)
	}
	if status != 200 {
		defer conn.Close()
		body := make([]byte, 0)
		if length > 0 && length < 1<<16 {
			body = make([]byte, length)
			_, _ = io.ReadFull(br, body)
		}
		return nil, errorFromAnswer(status, body)
	}
	var body io.Reader = br
	if chunked {
		body = &chunkReader{br: br}
	}
	events := make(chan Event, 16)
	stop := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			conn.Close()
		case <-stop:
		}
	}()
	go func() {
		defer close(events)
		defer close(stop)
		defer conn.Close()
		lines := bufio.NewScanner(deadlineReader{conn, body})
		var data []string
		for lines.Scan() {
			line := strings.TrimSuffix(lines.Text(), "\r")
			switch {
			case strings.HasPrefix(line, "data:"):
				data = append(data, strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " "))
			case line == "" && len(data) > 0:
				var ev Event
				if json.Unmarshal([]byte(strings.Join(data, "\n")), &ev) == nil {
					select {
					case events <- ev:
					case <-ctx.Done():
						return
					}
				}
				data = nil
			}
		}
	}()
	return events, nil
}

// Watch follows the default daemon's events: see Client.Watch.
func Watch(ctx context.Context, profile string) (<-chan Event, error) {
	return NewClient("").Watch(ctx, profile)
}

// deadlineReader pushes the connection's read deadline on before each read.
type deadlineReader struct {
	conn net.Conn
	r    io.Reader
}

func (d deadlineReader) Read(p []byte) (int, error) {
	_ = d.conn.SetReadDeadline(time.Now().Add(watchSilence))
	return d.r.Read(p)
}

// chunkReader decodes a chunked body as it arrives (RFC 9112 section 7.1).
type chunkReader struct {
	br   *bufio.Reader
	left int64 // bytes left in the current chunk
	done bool
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if c.done {
		return 0, io.EOF
	}
	if c.left == 0 {
		line, err := readLine(c.br)
		if err != nil {
			return 0, err
		}
		size, _, _ := strings.Cut(line, ";")
		n, err := strconv.ParseInt(strings.TrimSpace(size), 16, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("bad chunk size %q", line)
		}
		if n == 0 {
			c.done = true
			return 0, io.EOF
		}
		c.left = n
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.br.Read(p)
	c.left -= int64(n)
	if err == nil && c.left == 0 {
		_, err = readLine(c.br) // the CRLF after the chunk
	}
	return n, err
}
