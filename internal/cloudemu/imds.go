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
	return m, nil
}

func (m *imds) close() { m.srv.Close() }

func (m *imds) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/latest/api/token" {
		if r.Method != http.MethodPut || r.Header.Get("X-Aws-Ec2-Metadata-Token-Ttl-Seconds") == "" {
			http.Error(w, "", http.StatusBadRequest)
			return
		}
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
// profile's ARN, as moto knows them.
func (m *imds) role(ctx context.Context) (role, arn string, err error) {
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
	return sdkaws.ToString(prof.InstanceProfile.Roles[0].RoleName), arn, nil
}

// credentials answers the role's credentials, from STS AssumeRole.
func (m *imds) credentials(w http.ResponseWriter, r *http.Request, name string) {
	ctx := r.Context()
	role, _, err := m.role(ctx)
	if err != nil || role != name {
		http.NotFound(w, r)
		return
	}
	got, err := m.v.iam.GetRole(ctx, &iam.GetRoleInput{RoleName: &role})
	if err != nil {
		http.Error(w, "", http.StatusInternalServerError)
		return
	}
	out, err := m.v.sts.AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: got.Role.Arn, RoleSessionName: sdkaws.String(m.instance), DurationSeconds: sdkaws.Int32(3600)})
	if err != nil {
		http.Error(w, "", http.StatusInternalServerError)
		return
	}
	c := out.Credentials
	json.NewEncoder(w).Encode(map[string]string{
		"Code": "Success", "LastUpdated": time.Now().UTC().Format(time.RFC3339), "Type": "AWS-HMAC",
		"AccessKeyId": sdkaws.ToString(c.AccessKeyId), "SecretAccessKey": sdkaws.ToString(c.SecretAccessKey),
		"Token": sdkaws.ToString(c.SessionToken), "Expiration": sdkaws.ToTime(c.Expiration).UTC().Format(time.RFC3339),
	})
}
