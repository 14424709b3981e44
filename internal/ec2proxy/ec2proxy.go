package ec2proxy

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/anycloud/anycloud/manifests"
)

// AnyAction, given to Inject, InjectEvery, InjectRandom or Count, stands
// for every action.
const AnyAction = "*"

// A Fault is what the proxy does to one request instead of plainly
// forwarding it: one of the constants of this package, or Latency(d).
type Fault interface {
	String() string
	isFault()
}

// The faults that need no argument.
const (
	// Throttle answers 400 with the EC2 error RequestLimitExceeded without
	// forwarding.
	Throttle fixed = iota + 1
	// Unavailable answers 503 with the EC2 error Unavailable without
	// forwarding.
	Unavailable
	// InternalError answers 500 with the EC2 error InternalError without
	// forwarding.
	InternalError
	// DropRequest closes the client's connection without forwarding or
	// answering: the call had no effect.
	DropRequest
	// DropResponse forwards the request, so the call takes effect at the
	// target, then closes the client's connection without answering.
	DropResponse
	// Replay answers with the last successful answer to the same action
	// that said something, without forwarding: a message delivered twice
	// (ReceiveMessage), a duplicate answer. An empty JSON answer (a
	// receive that found nothing) is not remembered. With no earlier
	// answer it forwards.
	Replay
)

type fixed int

func (fixed) isFault() {}

func (f fixed) String() string {
	switch f {
	case Throttle:
		return "Throttle"
	case Unavailable:
		return "Unavailable"
	case InternalError:
		return "InternalError"
	case DropRequest:
		return "DropRequest"
	case DropResponse:
		return "DropResponse"
	case Replay:
		return "Replay"
	}
	return "fixed(" + strconv.Itoa(int(f)) + ")"
}

// ErrorCode is the fault that answers with an EC2 error of that code
// (such as InsufficientInstanceCapacity, SpotMaxPriceTooLow, Unsupported)
// without forwarding.
func ErrorCode(code string) Fault { return errorCode(code) }

type errorCode string

func (errorCode) isFault() {}

func (e errorCode) String() string { return "ErrorCode(" + string(e) + ")" }

// ErrorMessage is ErrorCode with EC2's own message, for errors told
// apart by it (such as InvalidParameterValue for an instance profile EC2
// does not see yet).
func ErrorMessage(code, message string) Fault { return errorMessage{code, message} }

type errorMessage struct{ code, message string }

func (errorMessage) isFault() {}

func (e errorMessage) String() string { return "ErrorMessage(" + e.code + ")" }

// Latency is the fault that delays a request by d, then forwards it.
func Latency(d time.Duration) Fault { return latency(d) }

type latency time.Duration

func (latency) isFault() {}

func (l latency) String() string { return "Latency(" + time.Duration(l).String() + ")" }

// errorAnswer is how a fault that answers answers, as EC2 documents
// the error, or nil for a fault that does not answer.
func (f fixed) errorAnswer() *answer {
	switch f {
	case Throttle:
		return errorAnswer(http.StatusBadRequest, "RequestLimitExceeded", "Request limit exceeded.")
	case Unavailable:
		return errorAnswer(http.StatusServiceUnavailable, "Unavailable", "The server is overloaded and can't handle the request.")
	case InternalError:
		return errorAnswer(http.StatusInternalServerError, "InternalError", "An internal error has occurred.")
	}
	return nil
}

// A rule is a standing fault: every nth matching request, or each with
// probability p.
type rule struct {
	action string
	// param and value, when set, limit the rule to requests whose
	// parameter param is value (a subnet, a market type).
	param, value string
	fault        Fault
	every        int
	seen         int
	p            float64
	rand         *rand.Rand
}

func (r *rule) fires() bool {
	r.seen++
	if r.every > 0 {
		return r.seen%r.every == 0
	}
	return r.rand.Float64() < r.p
}

// A Proxy forwards EC2 Query requests to a target, counting them by
// action, injecting faults and giving RunInstances ClientToken
// idempotency. See the package documentation.
type Proxy struct {
	target   *url.URL
	listener net.Listener
	server   *http.Server
	client   *http.Client

	mu         sync.Mutex
	counts     map[string]int
	forwarded  map[string]int
	bodies     [][]byte
	keepBodies bool
	queued     map[string][]Fault
	rules      []*rule
	// last is the last successful answer per action, for Replay.
	last map[string]*answer

	// instances, when set, answers for emulated VMs (EmulateInstances).
	instances Instances

	tokensMu sync.Mutex
	tokens   map[string]*launch
}

// A launch is what the proxy knows of one ClientToken: the parameters of
// the request that first used it and, once one succeeded, its answer.
// done is closed when the request holding the token finishes.
type launch struct {
	params string
	done   chan struct{}
	answer *answer
}

// An answer is a response from the target, read in full.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// New starts a Proxy to target, the base URL of an EC2 endpoint such as
// "http://127.0.0.1:5000", listening on a free port of 127.0.0.1.
func New(target string) (*Proxy, error) { return Listen(target, "127.0.0.1:0") }

// Listen is New listening on addr (host:port; port 0 picks a free one).
func Listen(target, addr string) (*Proxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("parse target %q: %w", target, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("target %q is not an http(s) URL", target)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = 256
	p := &Proxy{
		target:     u,
		listener:   l,
		client:     &http.Client{Transport: transport},
		counts:     map[string]int{},
		forwarded:  map[string]int{},
		keepBodies: true,
		queued:     map[string][]Fault{},
		last:       map[string]*answer{},
		tokens:     map[string]*launch{},
	}
	p.server = &http.Server{Handler: http.HandlerFunc(p.serve), ReadHeaderTimeout: 10 * time.Second}
	go p.server.Serve(l)
	return p, nil
}

// URL is the proxy's base URL, "http://127.0.0.1:PORT".
func (p *Proxy) URL() string { return "http://" + p.listener.Addr().String() }

// Target is the base URL the proxy forwards to.
func (p *Proxy) Target() string { return p.target.String() }

// Close stops listening and closes every connection, including those of
// requests in progress.
func (p *Proxy) Close() error {
	err := p.server.Close()
	p.client.CloseIdleConnections()
	return err
}

// Count is the number of requests for action that reached the proxy,
// whatever became of them: forwarded, answered by a fault or replayed for
// a ClientToken. Count(AnyAction) is the total.
func (p *Proxy) Count(action string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return sum(p.counts, action)
}

// Forwarded is the number of requests for action the proxy passed on to
// the target. Forwarded(AnyAction) is the total.
func (p *Proxy) Forwarded(action string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return sum(p.forwarded, action)
}

func sum(m map[string]int, action string) int {
	if action != AnyAction {
		return m[action]
	}
	n := 0
	for _, c := range m {
		n += c
	}
	return n
}

// Counts is Count of every action seen, as a new map. A request whose
// action could not be read counts under "".
func (p *Proxy) Counts() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := make(map[string]int, len(p.counts))
	for a, n := range p.counts {
		m[a] = n
	}
	return m
}

// Reset forgets the counts and the bodies. Faults, rules and remembered
// ClientTokens stay.
func (p *Proxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts = map[string]int{}
	p.forwarded = map[string]int{}
	p.bodies = nil
}

// KeepBodies sets whether the proxy keeps request bodies (it does from
// New). A benchmark that sends many large requests may turn it off.
func (p *Proxy) KeepBodies(keep bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.keepBodies = keep
}

// Bodies is every request body the proxy received since New or Reset, in
// order of arrival, as copies. Bodies are URL-encoded forms; UserData in
// them is base64 as well: Seen looks through both.
func (p *Proxy) Bodies() [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([][]byte, len(p.bodies))
	for i, b := range p.bodies {
		out[i] = bytes.Clone(b)
	}
	return out
}

// Seen reports whether s occurs in any request body kept: in its raw
// bytes, in any decoded parameter value, or in any parameter value that
// decodes as base64 (UserData).
func (p *Proxy) Seen(s string) bool {
	if s == "" {
		return true
	}
	for _, b := range p.Bodies() {
		if bytes.Contains(b, []byte(s)) {
			return true
		}
		form, err := url.ParseQuery(string(b))
		if err != nil {
			continue
		}
		for _, values := range form {
			for _, v := range values {
				if strings.Contains(v, s) {
					return true
				}
				for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding} {
					if d, err := enc.DecodeString(v); err == nil && bytes.Contains(d, []byte(s)) {
						return true
					}
				}
			}
		}
	}
	return false
}

// Inject queues faults for action (or AnyAction): each later request for
// it consumes the next one, in order. Faults queued for the action itself
// are consumed before those for AnyAction, and both before any rule.
func (p *Proxy) Inject(action string, faults ...Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.queued[action] = append(p.queued[action], faults...)
}

// Pending is the number of faults queued for action (exactly that key,
// AnyAction included) that no request has consumed yet.
func (p *Proxy) Pending(action string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.queued[action])
}

// InjectEvery adds a standing rule: the nth, 2nth, 3nth... request for
// action (or AnyAction) from now on gets fault, unless a queued fault
// applies to it first. n < 1 is treated as 1: every request.
func (p *Proxy) InjectEvery(action string, n int, fault Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = append(p.rules, &rule{action: action, fault: fault, every: max(n, 1)})
}

// InjectRandom adds a standing rule: each request for action (or
// AnyAction) gets fault with probability prob, drawn from a generator
// seeded with seed, unless a queued fault or an earlier rule applies
// first. The same seed and the same sequence of requests give the same
// faults.
func (p *Proxy) InjectRandom(action string, prob float64, seed uint64, fault Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = append(p.rules, &rule{action: action, fault: fault, p: prob, rand: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))})
}

// FailWhere adds a standing rule: every request for action whose
// parameter param is value gets fault — such as no spot capacity in one
// subnet: FailWhere("RunInstances", "SubnetId", "subnet-a",
// ErrorCode("InsufficientInstanceCapacity")).
func (p *Proxy) FailWhere(action, param, value string, fault Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = append(p.rules, &rule{action: action, param: param, value: value, fault: fault, every: 1})
}

// ClearFaults drops every queued fault and every rule.
func (p *Proxy) ClearFaults() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.queued = map[string][]Fault{}
	p.rules = nil
}

// arrive counts a request and picks its fault, if any.
func (p *Proxy) arrive(action string, body []byte, form url.Values) Fault {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts[action]++
	if p.keepBodies {
		p.bodies = append(p.bodies, body)
	}
	for _, key := range []string{action, AnyAction} {
		if q := p.queued[key]; len(q) > 0 {
			p.queued[key] = q[1:]
			if len(q) == 1 {
				delete(p.queued, key)
			}
			return q[0]
		}
	}
	var fault Fault
	for _, r := range p.rules {
		if r.action != action && r.action != AnyAction {
			continue
		}
		if r.param != "" && form.Get(r.param) != r.value {
			continue
		}
		// Every matching rule sees the request, so that "every nth"
		// means every nth whatever the other rules did.
		if r.fires() && fault == nil {
			fault = r.fault
		}
	}
	return fault
}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	form, _ := url.ParseQuery(string(body))
	if q := r.URL.Query(); len(q) > 0 {
		for k, v := range q {
			form[k] = append(form[k], v...)
		}
	}
	action := form.Get("Action")
	if target := r.Header.Get("X-Amz-Target"); action == "" && target != "" {
		// The JSON protocols (SQS, EventBridge, SSM) name the operation in
		// a header: "AmazonSQS.ReceiveMessage".
		_, action, _ = strings.Cut(target, ".")
	}

	fault := p.arrive(action, body, form)
	switch f := fault.(type) {
	case latency:
		t := time.NewTimer(time.Duration(f))
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	case errorCode:
		errorAnswer(http.StatusBadRequest, string(f), "ec2proxy: injected "+string(f)+".").write(w)
		return
	case errorMessage:
		errorAnswer(http.StatusBadRequest, f.code, f.message).write(w)
		return
	case fixed:
		if f == DropRequest {
			hangUp(w)
			return
		}
		if a := f.errorAnswer(); a != nil {
			a.write(w)
			return
		}
	}

	if fault == Replay {
		p.mu.Lock()
		last := p.last[action]
		p.mu.Unlock()
		if last != nil {
			last.write(w)
			return
		}
	}
	var a *answer
	in := p.emulated()
	switch {
	case action == "GetConsoleOutput" && in != nil:
		if a = consoleAnswer(in, form.Get("InstanceId")); a == nil {
			a = p.forward(r, action, body)
		}
	case action == "RunInstances" && form.Get("ClientToken") != "":
		a = p.launch(r, body, form)
	default:
		a = p.forward(r, action, body)
	}
	if in != nil && (action == "RunInstances" || action == "DescribeInstances") {
		a = rewriteAddresses(a, in)
	}
	if a.status == http.StatusOK && len(bytes.TrimSpace(a.body)) > 2 {
		p.mu.Lock()
		p.last[action] = a
		p.mu.Unlock()
	}
	if fault == DropResponse {
		hangUp(w)
		return
	}
	a.write(w)
}

func (a *answer) write(w http.ResponseWriter) {
	for k, v := range a.header {
		w.Header()[k] = v
	}
	w.WriteHeader(a.status)
	w.Write(a.body)
}

// launch answers a RunInstances that carries a ClientToken: from memory
// if a request with that token succeeded before, otherwise by forwarding
// it. Requests with the same token are serialized, as EC2 would.
func (p *Proxy) launch(r *http.Request, body []byte, form url.Values) *answer {
	key := region(r) + "\x00" + form.Get("ClientToken")
	params := canonical(form)
	for {
		p.tokensMu.Lock()
		l, ok := p.tokens[key]
		if !ok {
			l = &launch{params: params, done: make(chan struct{})}
			p.tokens[key] = l
			p.tokensMu.Unlock()
			a := p.forward(r, "RunInstances", body)
			p.tokensMu.Lock()
			if a.status == http.StatusOK {
				l.answer = a
			} else {
				// EC2 keeps only tokens of launches that happened.
				delete(p.tokens, key)
			}
			close(l.done)
			p.tokensMu.Unlock()
			return a
		}
		p.tokensMu.Unlock()

		select {
		case <-l.done:
		case <-r.Context().Done():
			return errorAnswer(http.StatusServiceUnavailable, "Unavailable", "The request was cancelled.")
		}
		if l.answer == nil {
			continue // the holder failed: try again, perhaps as holder
		}
		if l.params != params {
			return errorAnswer(http.StatusBadRequest, "IdempotentParameterMismatch",
				"Arguments on this idempotent request are inconsistent with arguments used in previous request(s).")
		}
		alive, err := p.alive(r, l.answer.body)
		if err != nil {
			return errorAnswer(http.StatusInternalServerError, "InternalError", "ec2proxy: "+err.Error())
		}
		if !alive {
			return errorAnswer(http.StatusBadRequest, "IdempotentInstanceTerminated",
				"The client token "+form.Get("ClientToken")+" was used by a launch whose instance has been terminated.")
		}
		return l.answer
	}
}

// alive asks the target whether every instance of a RunInstances answer
// is still there and not terminated.
func (p *Proxy) alive(r *http.Request, runAnswer []byte) (bool, error) {
	var run struct {
		Instances []string `xml:"instancesSet>item>instanceId"`
	}
	if err := xml.Unmarshal(runAnswer, &run); err != nil {
		return false, fmt.Errorf("read remembered RunInstances answer: %w", err)
	}
	if len(run.Instances) == 0 {
		return true, nil
	}
	form := url.Values{"Action": {"DescribeInstances"}, "Version": {"2016-11-15"}}
	for i, id := range run.Instances {
		form.Set("InstanceId."+strconv.Itoa(i+1), id)
	}
	req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, p.target.String(), strings.NewReader(form.Encode()))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	// moto reads the account and region from the credential scope of
	// Authorization; it does not check the signature.
	for _, h := range []string{"Authorization", "X-Amz-Date", "X-Amz-Security-Token"} {
		if v := r.Header.Get(h); v != "" {
			req.Header.Set(h, v)
		}
	}
	res, err := p.client.Do(req)
	if err != nil {
		return false, fmt.Errorf("describe instances %v: %w", run.Instances, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return false, fmt.Errorf("describe instances %v: %w", run.Instances, err)
	}
	if res.StatusCode != http.StatusOK {
		if bytes.Contains(b, []byte("InvalidInstanceID.NotFound")) {
			return false, nil
		}
		return false, fmt.Errorf("describe instances %v: %s: %s", run.Instances, res.Status, b)
	}
	var described struct {
		States []string `xml:"reservationSet>item>instancesSet>item>instanceState>name"`
	}
	if err := xml.Unmarshal(b, &described); err != nil {
		return false, fmt.Errorf("read DescribeInstances answer: %w", err)
	}
	if len(described.States) < len(run.Instances) {
		return false, nil
	}
	for _, s := range described.States {
		if s == "terminated" {
			return false, nil
		}
	}
	return true, nil
}

// forward sends the request on to the target and reads the answer in
// full. A failure to reach the target is answered as a 502.
func (p *Proxy) forward(r *http.Request, action string, body []byte) *answer {
	p.mu.Lock()
	p.forwarded[action]++
	p.mu.Unlock()

	u := *p.target
	u.Path = strings.TrimSuffix(u.Path, "/") + r.URL.Path
	u.RawQuery = r.URL.RawQuery
	// Not the client's context: a request that reached the proxy reaches
	// the target in full, as on a real network where the client hanging
	// up does not undo a call EC2 has received.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, r.Method, u.String(), bytes.NewReader(body))
	if err != nil {
		return errorAnswer(http.StatusBadGateway, "InternalError", "ec2proxy: "+err.Error())
	}
	for k, v := range r.Header {
		if !hopByHop(k) && k != "Accept-Encoding" {
			req.Header[k] = v
		}
	}
	res, err := p.client.Do(req)
	if err != nil {
		return errorAnswer(http.StatusBadGateway, "InternalError", "ec2proxy: "+err.Error())
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return errorAnswer(http.StatusBadGateway, "InternalError", "ec2proxy: read answer: "+err.Error())
	}
	h := http.Header{}
	for k, v := range res.Header {
		// The body's length is the answer's own, except for a HEAD
		// (S3's answer to which is the object's length, with no body).
		if !hopByHop(k) && (k != "Content-Length" || r.Method == http.MethodHead) && k != "Content-Encoding" {
			h[k] = v
		}
	}
	return &answer{status: res.StatusCode, header: h, body: b}
}

func hopByHop(header string) bool {
	switch header {
	case "Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}

// hangUp closes the client's connection without a word.
func hangUp(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler) // net/http closes the connection
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	conn.Close()
}

// errorAnswer is an EC2 error response.
func errorAnswer(status int, code, message string) *answer {
	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n<Response><Errors><Error><Code>")
	xml.EscapeText(&b, []byte(code))
	b.WriteString("</Code><Message>")
	xml.EscapeText(&b, []byte(message))
	b.WriteString("</Message></Error></Errors><RequestID>")
	b.WriteString(requestID())
	b.WriteString("</RequestID></Response>")
	return &answer{
		status: status,
		header: http.Header{"Content-Type": {"text/xml;charset=UTF-8"}},
		body:   b.Bytes(),
	}
}

// requestID is a random UUID, the form of EC2's request ids.
func requestID() string { return manifests.NewUID() }

// region is the region in the credential scope of a SigV4 Authorization
// header ("Credential=AKID/20240101/us-east-1/ec2/aws4_request"), or ""
// if there is none. ClientTokens are scoped to it, as in EC2.
func region(r *http.Request) string {
	auth := r.Header.Get("Authorization")
	if auth == "" {
		auth = "Credential=" + r.URL.Query().Get("X-Amz-Credential")
	}
	_, cred, ok := strings.Cut(auth, "Credential=")
	if !ok {
		return ""
	}
	cred, _, _ = strings.Cut(cred, ",")
	parts := strings.Split(cred, "/")
	if len(parts) < 3 {
		return ""
	}
	return parts[2]
}

// canonical is the request's parameters in a fixed order, without those
// that differ between two sendings of the same call (presigning).
func canonical(form url.Values) string {
	c := url.Values{}
	for k, v := range form {
		switch {
		case strings.HasPrefix(k, "X-Amz-"), strings.HasPrefix(k, "Signature"),
			k == "AWSAccessKeyId", k == "Timestamp", k == "Expires":
			continue
		}
		c[k] = v
	}
	return c.Encode() // sorted by key
}
