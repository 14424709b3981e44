package ec2proxy

import (
	"bytes"
	"encoding/base64"
	"encoding/xml"
	"io"
	"net/http"
	"regexp"
	"time"
)

// Instances is what a VM emulator tells the proxy about the instances it
// boots (see EmulateInstances). Implementations are safe for concurrent
// use.
type Instances interface {
	// Address is the address that stands for the instance id, or "" while
	// it has none (the VM is not booted yet, or is gone).
	Address(id string) string
	// ConsoleOutput is the instance's console so far, and false when the
	// emulator does not know the instance.
	ConsoleOutput(id string) ([]byte, bool)
}

// EmulateInstances makes the proxy answer for in's instances as EC2 would
// for real VMs: in every RunInstances and DescribeInstances answer each
// instance's addresses (public and private IPs, DNS names) are replaced by
// in.Address, or removed while it has none, so that no client ever sees —
// and dials — the address the target invented; GetConsoleOutput is
// answered with in.ConsoleOutput. Pass nil to stop.
func (p *Proxy) EmulateInstances(in Instances) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.instances = in
}

func (p *Proxy) emulated() Instances {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.instances
}

// consoleAnswer answers GetConsoleOutput for an emulated instance, or
// returns nil to let the target answer.
func consoleAnswer(in Instances, id string) *answer {
	out, ok := in.ConsoleOutput(id)
	if !ok {
		return nil
	}
	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n" + `<GetConsoleOutputResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>`)
	b.WriteString(requestID())
	b.WriteString("</requestId><instanceId>")
	xml.EscapeText(&b, []byte(id))
	b.WriteString("</instanceId><timestamp>")
	b.WriteString(time.Now().UTC().Format("2006-01-02T15:04:05.000Z"))
	b.WriteString("</timestamp><output>")
	b.WriteString(base64.StdEncoding.EncodeToString(out))
	b.WriteString("</output></GetConsoleOutputResponse>")
	return &answer{status: http.StatusOK, header: http.Header{"Content-Type": {"text/xml;charset=UTF-8"}}, body: b.Bytes()}
}

var (
	// addressElement is an element of an instance that holds an address
	// or a name made of one. [^<]* cannot span a tag, so the opening and
	// closing names are the same in well-formed XML.
	addressElement = regexp.MustCompile(`<(ipAddress|privateIpAddress|publicIp|dnsName|privateDnsName|publicDnsName)>[^<]*</(?:ipAddress|privateIpAddress|publicIp|dnsName|privateDnsName|publicDnsName)>`)
	instanceIDElem = regexp.MustCompile(`<instanceId>([^<]+)</instanceId>`)
)

// rewriteAddresses returns a copy of a RunInstances or DescribeInstances
// answer whose instances carry in's addresses. The body is changed only
// inside each instancesSet item, as text, so that the rest of the
// target's answer reaches the client byte for byte.
func rewriteAddresses(a *answer, in Instances) *answer {
	if a.status != http.StatusOK {
		return a
	}
	spans := instanceSpans(a.body)
	if len(spans) == 0 {
		return a
	}
	var out bytes.Buffer
	last := 0
	for _, s := range spans {
		out.Write(a.body[last:s[0]])
		item := a.body[s[0]:s[1]]
		addr := ""
		if m := instanceIDElem.FindSubmatch(item); m != nil {
			addr = in.Address(string(m[1]))
		}
		out.Write(addressElement.ReplaceAllFunc(item, func(el []byte) []byte {
			name := string(addressElement.FindSubmatch(el)[1])
			switch {
			case addr == "":
				return nil
			case name == "ipAddress" || name == "privateIpAddress" || name == "publicIp":
				return []byte("<" + name + ">" + addr + "</" + name + ">")
			default:
				return nil // no DNS names for loopback addresses
			}
		}))
		last = s[1]
	}
	out.Write(a.body[last:])
	return &answer{status: a.status, header: a.header, body: out.Bytes()}
}

// instanceSpans are the byte ranges of the items of every instancesSet in
// an EC2 answer: one per instance.
func instanceSpans(body []byte) [][2]int {
	d := xml.NewDecoder(bytes.NewReader(body))
	var stack []string
	var spans [][2]int
	start := -1
	for {
		off := int(d.InputOffset())
		tok, err := d.RawToken()
		if err == io.EOF {
			return spans
		}
		if err != nil {
			return nil // not an answer to rewrite
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if t.Name.Local == "item" && len(stack) > 0 && stack[len(stack)-1] == "instancesSet" && start < 0 {
				start = off
			}
			stack = append(stack, t.Name.Local)
		case xml.EndElement:
			if len(stack) == 0 {
				return nil
			}
			stack = stack[:len(stack)-1]
			if t.Name.Local == "item" && start >= 0 && len(stack) > 0 && stack[len(stack)-1] == "instancesSet" {
				spans = append(spans, [2]int{start, int(d.InputOffset())})
				start = -1
			}
		}
	}
}
