package cloudemu

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// imds is one VM's instance metadata service, IMDSv2 only, on the VM's
// loopback address (a VM of the emulator has no 169.254.169.254): a
// session token from PUT /latest/api/token, then the instance id and the
// credentials of the role in the instance's profile, which it gets from
// moto's STS (AssumeRole) as EC2 gets them for a real instance. The VM's
// AWS SDKs find it through AWS_EC2_METADATA_SERVICE_ENDPOINT, which the
// emulator alone sets (the boot script puts it in /etc/environment).
type imds struct {
	instance, region string
	v                *VMs
	srv              *http.Server
	// URL is the endpoint, "http://127.X.Y.Z:PORT".
	URL string

	mu     sync.Mutex
	tokens map[string]time.Time
	// role and its credentials, kept: the SDKs on the VM give the
	// metadata service a second (rclone's) and moto takes longer than
	// that on a loaded machine.
	roleName, profile string
	creds             map[string]string
	credsExpire       time.Time
}

// startIMDS serves the instance's metadata on addr (the VM's own
// loopback address), on a free port.
func (v *VMs) startIMDS(instance, region, addr string) (*imds, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		return nil, fmt.Errorf("instance metadata of %s: %w", instance, err)
	}
	m := &imds{instance: instance, region: region, v: v, URL: "http://" + l.Addr().String(), tokens: map[string]time.Time{}}
	m.srv = &http.Server{Handler: m, ReadHeaderTimeout: 5 * time.Second}
	go m.srv.Serve(l)
	go m.warm()
	return m, nil
}

// warm fetches the role's credentials while the VM boots, so that its
// first request is answered at once.
func (m *imds) warm() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for ctx.Err() == nil {
		_, err := m.fetch(ctx)
		if err == nil || errors.Is(err, errNoRole) {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (m *imds) close() { m.srv.Close() }

func (m *imds) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/latest/api/token" {
		ttl := r.Header.Get("X-Aws-Ec2-Metadata-Token-Ttl-Seconds")
		if r.Method != http.MethodPut || ttl == "" {
			http.Error(w, "", http.StatusBadRequest)
			return
		}
		// As EC2's does: the AWS SDK for Go v1 (rclone's) reads the TTL
		// back and goes without a token when it is missing.
		w.Header().Set("X-Aws-Ec2-Metadata-Token-Ttl-Seconds", ttl)
		b := make([]byte, 24)
		rand.Read(b)
		tok := hex.EncodeToString(b)
		m.mu.Lock()
		m.tokens[tok] = time.Now().Add(6 * time.Hour)
		m.mu.Unlock()
		w.Write([]byte(tok))
		return
	}
	m.mu.Lock()
	exp, ok := m.tokens[r.Header.Get("X-Aws-Ec2-Metadata-Token")]
	m.mu.Unlock()
	if !ok || time.Now().After(exp) {
		http.Error(w, "", http.StatusUnauthorized) // IMDSv2 required, as anycloud launches
		return
	}
	p := strings.TrimPrefix(r.URL.Path, "/latest/meta-data/")
	switch {
	case p == "instance-id":
		w.Write([]byte(m.instance))
	case p == "placement/region":
		w.Write([]byte(m.region))
	case p == "iam/security-credentials" || p == "iam/security-credentials/":
		role, _, err := m.role(r.Context())
		if err != nil {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(role))
	case strings.HasPrefix(p, "iam/security-credentials/"):
		m.credentials(w, r, strings.TrimPrefix(p, "iam/security-credentials/"))
	case p == "iam/info":
		_, profile, err := m.role(r.Context())
		if err != nil {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(map[string]string{"Code": "Success", "LastUpdated": time.Now().UTC().Format(time.RFC3339), "InstanceProfileArn": profile})
	default:
		http.NotFound(w, r)
	}
}

var errNoRole = errors.New("the instance has no role")

// role is the name of the role in the instance's profile, and the
// profile's ARN, as moto knows them; kept once found.
func (m *imds) role(ctx context.Context) (role, arn string, err error) {
	m.mu.Lock()
	role, arn = m.roleName, m.profile
	m.mu.Unlock()
	if role != "" {
		return role, arn, nil
	}
	out, err := m.v.ec2[m.region].DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{m.instance}})
	if err != nil {
		return "", "", err
	}
	for _, res := range out.Reservations {
		for _, in := range res.Instances {
			if in.IamInstanceProfile != nil {
				arn = sdkaws.ToString(in.IamInstanceProfile.Arn)
			}
		}
	}
	if arn == "" {
		return "", "", errNoRole
	}
	name := arn[strings.LastIndex(arn, "/")+1:]
	prof, err := m.v.iam.GetInstanceProfile(ctx, &iam.GetInstanceProfileInput{InstanceProfileName: &name})
	if err != nil {
		return "", "", err
	}
	if len(prof.InstanceProfile.Roles) == 0 {
		return "", "", errNoRole
	}
	role = sdkaws.ToString(prof.InstanceProfile.Roles[0].RoleName)
	m.mu.Lock()
	m.roleName, m.profile = role, arn
	m.mu.Unlock()
	return role, arn, nil
}

// fetch returns the role's credentials, from STS AssumeRole when those
// kept expire within 15 minutes.
func (m *imds) fetch(ctx context.Context) (map[string]string, error) {
	m.mu.Lock()
	if m.creds != nil && time.Until(m.credsExpire) > 15*time.Minute {
		c := m.creds
		m.mu.Unlock()
		return c, nil
	}
	m.mu.Unlock()
	role, _, err := m.role(ctx)
	if err != nil {
		return nil, err
	}
	got, err := m.v.iam.GetRole(ctx, &iam.GetRoleInput{RoleName: &role})
	if err != nil {
		return nil, err
	}
	out, err := m.v.sts.AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: got.Role.Arn, RoleSessionName: sdkaws.String(m.instance), DurationSeconds: sdkaws.Int32(3600)})
	if err != nil {
		return nil, err
	}
	c := out.Credentials
	exp := sdkaws.ToTime(c.Expiration).UTC()
	creds := map[string]string{
		"Code": "Success", "LastUpdated": time.Now().UTC().Format(time.RFC3339), "Type": "AWS-HMAC",
		"AccessKeyId": sdkaws.ToString(c.AccessKeyId), "SecretAccessKey": sdkaws.ToString(c.SecretAccessKey),
		"Token": sdkaws.ToString(c.SessionToken), "Expiration": exp.Format(time.RFC3339),
	}
	m.mu.Lock()
	m.creds, m.credsExpire = creds, exp
	m.mu.Unlock()
	return creds, nil
}

// credentials answers the role's credentials.
func (m *imds) credentials(w http.ResponseWriter, r *http.Request, name string) {
	role, _, err := m.role(r.Context())
	if err != nil || role != name {
		http.NotFound(w, r)
		return
	}
	creds, err := m.fetch(r.Context())
	if err != nil {
		http.Error(w, "", http.StatusInternalServerError)
		return
	}
	json.NewEncoder(w).Encode(creds)
}
