package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/provider"
	"github.com/anycloud/anycloud/state"
)

// Client talks to a control plane over its unix socket or, made by
// NewRemoteClient, over TCP with a bearer token.
type Client struct {
	socket string
	// base is the URL requests go to: http://anycloud over the socket.
	base  string
	token string
	http  *http.Client
}

// NewClient returns a client for the socket at path.
func NewClient(path string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		MaxIdleConns: 4,
	}
	return &Client{socket: path, base: "http://anycloud", http: &http.Client{Transport: tr}}
}

// ErrUnreachable: nothing serves the socket.
var ErrUnreachable = errors.New("control plane not running")

// Ping checks that a control plane answers.
func (c *Client) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var v map[string]string
	return c.do(ctx, "GET", "/v1/version", nil, &v)
}

// Version returns the control plane's version and cluster id.
func (c *Client) Version(ctx context.Context) (version, cluster string, err error) {
	var v map[string]string
	err = c.do(ctx, "GET", "/v1/version", nil, &v)
	return v["version"], v["cluster"], err
}

// PID returns the process id of the control plane that answers.
func (c *Client) PID(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var v map[string]string
	if err := c.do(ctx, "GET", "/v1/version", nil, &v); err != nil {
		return 0, err
	}
	return strconv.Atoi(v["pid"])
}

// Backup copies the store to w and returns how many bytes it wrote.
func (c *Client) Backup(ctx context.Context, w io.Writer) (int64, error) {
	body, err := c.stream(ctx, "/v1/backup")
	if err != nil {
		return 0, err
	}
	defer body.Close()
	return io.Copy(w, body)
}

// RotateKey asks for a new cipher key.
func (c *Client) RotateKey(ctx context.Context) (state.RotateResult, error) {
	var out state.RotateResult
	err := c.do(ctx, "POST", "/v1/keys/rotate", nil, &out)
	return out, err
}

// Apply writes objects in one transaction.
func (c *Client) Apply(ctx context.Context, req ApplyRequest) (*ApplyResponse, error) {
	var out ApplyResponse
	if err := c.do(ctx, "POST", "/v1/apply", req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Get returns one object.
func (c *Client) Get(ctx context.Context, k manifests.Kind, name string) (manifests.Object, error) {
	var raw json.RawMessage
	if err := c.do(ctx, "GET", "/v1/"+plural(k)+"/"+url.PathEscape(name), nil, &raw); err != nil {
		return nil, err
	}
	return manifests.Unmarshal(k, raw)
}

// List returns every object of a kind.
func (c *Client) List(ctx context.Context, k manifests.Kind) ([]manifests.Object, error) {
	var l List
	if err := c.do(ctx, "GET", "/v1/"+plural(k), nil, &l); err != nil {
		return nil, err
	}
	out := make([]manifests.Object, 0, len(l.Items))
	for _, raw := range l.Items {
		o, err := manifests.Unmarshal(k, raw)
		if err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, nil
}

// Events returns an object's events.
func (c *Client) Events(ctx context.Context, k manifests.Kind, name string) ([]state.Event, error) {
	var out []state.Event
	err := c.do(ctx, "GET", "/v1/"+plural(k)+"/"+url.PathEscape(name)+"/events", nil, &out)
	return out, err
}

// Delete deletes an object; the result says whether it is gone or
// Terminating.
func (c *Client) Delete(ctx context.Context, k manifests.Kind, name string, opts state.DeleteOptions) (bool, error) {
	res, err := c.DeleteWithResult(ctx, k, name, opts)
	return res.Deleted, err
}

// DeleteWithResult deletes an object and says what the delete left
// behind.
func (c *Client) DeleteWithResult(ctx context.Context, k manifests.Kind, name string, opts state.DeleteOptions) (DeleteResponse, error) {
	q := url.Values{}
	if opts.Force {
		q.Set("force", "true")
	}
	if opts.Declarative {
		q.Set("declarative", "true")
	}
	if opts.UID != "" {
		q.Set("uid", opts.UID)
	}
	var out DeleteResponse
	path := "/v1/" + plural(k) + "/" + url.PathEscape(name)
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	err := c.do(ctx, "DELETE", path, nil, &out)
	return out, err
}

// Resubmit asks for the deployment's VM to be replaced.
func (c *Client) Resubmit(ctx context.Context, name string) (*manifests.Deployment, error) {
	var d manifests.Deployment
	if err := c.do(ctx, "POST", "/v1/deployments/"+url.PathEscape(name)+"/resubmit", nil, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// Logs copies a deployment's workload log to w; with follow it streams
// until ctx ends.
func (c *Client) Logs(ctx context.Context, name string, follow bool, w io.Writer) error {
	path := "/v1/deployments/" + url.PathEscape(name) + "/logs"
	if follow {
		path += "?follow=true"
	}
	body, err := c.stream(ctx, path)
	if err != nil {
		return err
	}
	defer body.Close()
	_, err = io.Copy(w, body)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// SSHInfo says how to reach a deployment's VM.
func (c *Client) SSHInfo(ctx context.Context, name string) (provider.SSHInfo, error) {
	var info provider.SSHInfo
	err := c.do(ctx, "GET", "/v1/deployments/"+url.PathEscape(name)+"/ssh", nil, &info)
	return info, err
}

// Sources returns the directories the control plane applies itself.
func (c *Client) Sources(ctx context.Context) ([]SourceStatus, error) {
	var out []SourceStatus
	err := c.do(ctx, "GET", "/v1/sources", nil, &out)
	return out, err
}

// DashboardTicket mints a one-time sign-in link to the dashboard.
func (c *Client) DashboardTicket(ctx context.Context) (*DashboardTicket, error) {
	var t DashboardTicket
	if err := c.do(ctx, "POST", "/v1/dashboard/tickets", nil, &t); err != nil {
		return nil, err
	}
	return &t, nil
}

// SealingKey returns the public key values are sealed to.
func (c *Client) SealingKey(ctx context.Context) (string, error) {
	var k SealingKey
	err := c.do(ctx, "GET", "/v1/sealing-key", nil, &k)
	return k.PublicKey, err
}

// Watch streams events for a kind: first every current object as ADDED,
// then changes. fn is called for each until it returns an error or ctx
// ends; Watch returns nil when ctx ends.
func (c *Client) Watch(ctx context.Context, k manifests.Kind, fn func(state.WatchEvent) error) error {
	body, err := c.stream(ctx, "/v1/"+plural(k)+"?watch=true")
	if err != nil {
		return err
	}
	defer body.Close()
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var raw struct {
			Type   string          `json:"type"`
			Object json.RawMessage `json:"object"`
		}
		if err := json.Unmarshal(sc.Bytes(), &raw); err != nil {
			return fmt.Errorf("watch: %w", err)
		}
		o, err := manifests.Unmarshal(k, raw.Object)
		if err != nil {
			return err
		}
		if err := fn(state.WatchEvent{Type: raw.Type, Object: o}); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	return fmt.Errorf("watch: the control plane closed the stream")
}

// stream opens a GET whose answer is read as it comes (logs, watches);
// the caller closes the body.
func (c *Client) stream(ctx context.Context, path string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", c.base+path, nil)
	if err != nil {
		return nil, err
	}
	c.authorize(req)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, c.transportError(err)
	}
	if resp.StatusCode != 200 {
		defer resp.Body.Close()
		return nil, readError(resp)
	}
	return resp.Body, nil
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	c.authorize(req)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return c.transportError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return readError(resp)
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode %s %s response: %w", method, path, err)
	}
	return nil
}

func (c *Client) authorize(req *http.Request) {
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
}

// AddUser makes an API user and returns its token (shown once).
func (c *Client) AddUser(ctx context.Context, name string) (UserToken, error) {
	var out UserToken
	err := c.do(ctx, "POST", "/v1/users", map[string]string{"name": name}, &out)
	return out, err
}

// ListUsers lists the API's users (never their tokens).
func (c *Client) ListUsers(ctx context.Context) ([]state.APIUser, error) {
	var out []state.APIUser
	err := c.do(ctx, "GET", "/v1/users", nil, &out)
	return out, err
}

// RemoveUser removes an API user; its token stops working at once.
func (c *Client) RemoveUser(ctx context.Context, name string) error {
	return c.do(ctx, "DELETE", "/v1/users/"+url.PathEscape(name), nil, nil)
}

func (c *Client) transportError(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return fmt.Errorf("%w at %s", ErrUnreachable, c.socket)
	}
	return err
}

func readError(resp *http.Response) error {
	var st Status
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err := json.Unmarshal(b, &st); err != nil || st.Code == 0 {
		return &Error{Status: Status{Code: resp.StatusCode, Reason: http.StatusText(resp.StatusCode), Message: fmt.Sprintf("control plane answered %s", resp.Status)}}
	}
	return &Error{Status: st}
}

func asError(err error, target **Error) bool { return errors.As(err, target) }
