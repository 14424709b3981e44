package aws_test

import (
	"encoding/json"
	"path"
	"slices"
	"strings"
	"testing"

	"github.com/anycloud/anycloud/provider"
	awsprovider "github.com/anycloud/anycloud/provider/aws"
)

// parsedPolicy is BucketPolicy's document as IAM reads it.
type parsedPolicy struct {
	Statement []struct {
		Action    []string
		Resource  []string
		Condition map[string]map[string][]string
	}
}

// parsePolicy reads BucketPolicy's document of buckets.
func parsePolicy(t *testing.T, buckets ...provider.Bucket) (parsedPolicy, string) {
	t.Helper()
	doc, ok := awsprovider.BucketPolicy(buckets)
	if !ok {
		t.Fatalf("no policy for %+v", buckets)
	}
	var p parsedPolicy
	if err := json.Unmarshal([]byte(doc), &p); err != nil {
		t.Fatal(err)
	}
	return p, doc
}

// allows reports whether the policy allows action on resource with the
// given s3:prefix ("" for none), matching IAM's * wildcard (path.Match's
// * stops at "/", IAM's does not, so "/" is swapped out first).
func (p parsedPolicy) allows(action, resource, prefix string) bool {
	glob := func(pattern, s string) bool {
		ok, _ := path.Match(pattern, s)
		return ok
	}
	iamLike := func(pattern, s string) bool {
		const sep = "\x01"
		return glob(strings.ReplaceAll(pattern, "/", sep), strings.ReplaceAll(s, "/", sep))
	}
	for _, st := range p.Statement {
		if !slices.Contains(st.Action, action) {
			continue
		}
		for _, r := range st.Resource {
			if !iamLike(r, resource) {
				continue
			}
			want, cond := st.Condition["StringLike"]["s3:prefix"]
			if !cond {
				return true
			}
			for _, w := range want {
				if iamLike(w, prefix) {
					return true
				}
			}
		}
	}
	return false
}

// TestBucketPolicyTreatsAPrefixAsAFolder: s3://data/imagenet reaches
// data/imagenet/… and never the sibling data/imagenet2/….
func TestBucketPolicyTreatsAPrefixAsAFolder(t *testing.T) {
	for _, prefix := range []string{"imagenet", "imagenet/", "/imagenet/"} {
		p, doc := parsePolicy(t, provider.Bucket{Bucket: "data", Prefix: prefix, ReadWrite: true})
		for _, c := range []struct {
			action, resource, prefix string
			want                     bool
		}{
			{"s3:GetObject", "arn:aws:s3:::data/imagenet/x.jpg", "", true},
			{"s3:GetObject", "arn:aws:s3:::data/imagenet/a/b/x.jpg", "", true},
			{"s3:PutObject", "arn:aws:s3:::data/imagenet/x.jpg", "", true},
			{"s3:GetObject", "arn:aws:s3:::data/imagenet2/x.jpg", "", false},
			{"s3:PutObject", "arn:aws:s3:::data/imagenet2/x.jpg", "", false},
			{"s3:GetObject", "arn:aws:s3:::data/other.txt", "", false},
			{"s3:GetObject", "arn:aws:s3:::database/imagenet/x.jpg", "", false},
			{"s3:ListBucket", "arn:aws:s3:::data", "imagenet/", true},
			{"s3:ListBucket", "arn:aws:s3:::data", "imagenet/a/", true},
			{"s3:ListBucket", "arn:aws:s3:::data", "imagenet2/", false},
			{"s3:ListBucket", "arn:aws:s3:::data", "", false},
			{"s3:ListBucket", "arn:aws:s3:::other", "imagenet/", false},
		} {
			if got := p.allows(c.action, c.resource, c.prefix); got != c.want {
				t.Errorf("prefix %q: %s on %s (s3:prefix %q) allowed = %v, want %v\n%s", prefix, c.action, c.resource, c.prefix, got, c.want, doc)
			}
		}
	}
}

// TestBucketPolicyOfAWholeBucketHasNoCondition: s3://data is every key.
func TestBucketPolicyOfAWholeBucketHasNoCondition(t *testing.T) {
	p, doc := parsePolicy(t, provider.Bucket{Bucket: "data"})
	if !p.allows("s3:ListBucket", "arn:aws:s3:::data", "") || !p.allows("s3:GetObject", "arn:aws:s3:::data/any/key", "") {
		t.Errorf("the whole bucket is not readable: %s", doc)
	}
	if p.allows("s3:PutObject", "arn:aws:s3:::data/any/key", "") {
		t.Errorf("a read-only bucket is writable: %s", doc)
	}
	if _, ok := awsprovider.BucketPolicy(nil); ok {
		t.Error("a policy for no buckets")
	}
}
