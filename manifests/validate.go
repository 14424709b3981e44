package manifests

import (
	"fmt"
	"maps"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Default fills in what the user may leave out.
func Default(o Object) {
	switch o := o.(type) {
	case *Deployment:
		if o.Spec.Credentials == "" {
			o.Spec.Credentials = LocalCredentials
		}
		if src := o.Spec.Source; src != nil {
			if src.Path == "" {
				src.Path = DefaultSourcePath
			}
			if src.ExposeToken == nil {
				yes := true
				src.ExposeToken = &yes
			}
		}
	case *Credentials:
		if o.Spec.Provider == ProviderAWS && o.Spec.AWS == nil {
			o.Spec.AWS = &AWSCredentials{}
		}
	}
}

var (
	nameRE   = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
	envKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	labelRE  = regexp.MustCompile(`^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
)

// ValidateName checks an object name: a DNS label, as Kubernetes names are,
// because names end up in container names, tags and file names.
func ValidateName(name string) string {
	switch {
	case name == "":
		return "required"
	case len(name) > 63:
		return "must be at most 63 characters"
	case !nameRE.MatchString(name):
		return fmt.Sprintf("%q must be lower-case letters, digits and '-', starting and ending with a letter or digit", name)
	}
	return ""
}

var commitRE = regexp.MustCompile(`^([0-9a-f]{40}|[0-9a-f]{64})$`)

// ValidateGitURL checks a repository URL for spec.source.git: https (or
// http, for a server on this network), with a host and a path, and no
// credentials, which belong to `anycloud login`, never to a URL that is
// stored, shown and sent to the VM. The message never quotes a URL that
// holds credentials.
func ValidateGitURL(u string) string {
	if u == "" {
		return "required"
	}
	p, err := url.Parse(u)
	switch {
	case err != nil && strings.Contains(u, "@"):
		return "want an https:// URL (ssh remotes cannot use the GitHub token)"
	case err != nil:
		return fmt.Sprintf("%q is not a URL", u)
	case p.User != nil:
		return "holds credentials: remove them; `anycloud login` gives git the token"
	case p.Scheme != "https" && p.Scheme != "http":
		return fmt.Sprintf("want an https:// URL, got %q (ssh remotes cannot use the GitHub token)", u)
	case p.Host == "" || strings.Trim(p.Path, "/") == "":
		return fmt.Sprintf("want https://HOST/OWNER/REPO, got %q", u)
	case p.RawQuery != "" || p.Fragment != "":
		return fmt.Sprintf("want no query or fragment in %q", u)
	}
	return ""
}

// validateContainerPath checks an absolute path inside the container that
// a bind mount can name.
func validateContainerPath(p string) string {
	switch {
	case !strings.HasPrefix(p, "/"):
		return fmt.Sprintf("want an absolute path, got %q", p)
	case p == "/":
		return "cannot be the container's root"
	case path.Clean(p) != p:
		return fmt.Sprintf("want a clean path (%q), got %q", path.Clean(p), p)
	case strings.ContainsAny(p, ":,\\") || strings.IndexFunc(p, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0:
		return fmt.Sprintf("%q: a mount path cannot hold ':', ',', '\\' or control characters", p)
	case len(p) > 255:
		return "must be at most 255 characters"
	}
	return ""
}

var (
	instanceProfileRE = regexp.MustCompile(`^arn:aws[a-z-]*:iam::[0-9]{12}:instance-profile/[\w+=,.@/-]{1,128}$`)
	policyRE          = regexp.MustCompile(`^arn:aws[a-z-]*:iam::([0-9]{12}|aws):policy/[\w+=,.@/-]{1,128}$`)
	// bucketRE is S3's rule for bucket names (general purpose buckets).
	bucketRE = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)
)

// validateBuckets checks spec.buckets and what they need of spec.aws.
func validateBuckets(s *DeploymentSpec, add func(field, format string, args ...any)) {
	paths := map[string]int{}
	sameAccount := false
	for i, b := range s.Buckets {
		f := fmt.Sprintf("spec.buckets[%d]", i)
		bucket, prefix, ok := BucketAndPrefix(b.URI)
		switch {
		case b.URI == "":
			add(f+".uri", "required (s3://BUCKET/PREFIX)")
		case !ok:
			add(f+".uri", "want s3://BUCKET or s3://BUCKET/PREFIX, got %q", b.URI)
		case !bucketRE.MatchString(bucket) || strings.Contains(bucket, ".."):
			add(f+".uri", "%q is not a bucket name (3 to 63 lower-case letters, digits, '.' and '-')", bucket)
		case strings.ContainsAny(prefix, "*?[]\\") || strings.Contains(prefix, "//") || strings.IndexFunc(prefix, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0:
			add(f+".uri", "the prefix %q cannot hold wildcards, '\\', '//' or control characters", prefix)
		}
		if b.Path == "" {
			add(f+".path", "required (an absolute directory in the container)")
		} else if msg := validateContainerPath(b.Path); msg != "" {
			add(f+".path", "%s", msg)
		} else if j, dup := paths[b.Path]; dup {
			add(f+".path", "%s is also the path of spec.buckets[%d]", b.Path, j)
		} else if s.Source != nil && s.Source.Path == b.Path {
			add(f+".path", "%s is also spec.source.path", b.Path)
		}
		paths[b.Path] = i
		switch b.Mode {
		case "", BucketReadOnly, BucketReadWrite:
		default:
			add(f+".mode", "unknown mode %q (readOnly or readWrite)", b.Mode)
		}
		if b.Credentials != "" {
			if msg := ValidateName(b.Credentials); msg != "" {
				add(f+".credentials", "%s", msg)
			} else if b.Credentials == LocalCredentials {
				add(f+".credentials", "%q is the local Docker provider, which has no buckets: name aws credentials of the bucket's account", LocalCredentials)
			}
		} else {
			sameAccount = true
		}
		if b.SyncInterval != "" {
			if d, err := time.ParseDuration(b.SyncInterval); err != nil || d < 10*time.Second {
				add(f+".syncInterval", "%q is not a duration of at least 10s (such as 5m)", b.SyncInterval)
			}
		}
	}
	if sameAccount && s.IAMRole() == IAMRoleNone {
		add("spec.aws.iamRole", "none cannot read the buckets of this account: leave it out (managed) or name an instance profile")
	}
}

// ValidEnvKey reports whether k can be an environment variable name.
func ValidEnvKey(k string) bool { return envKeyRE.MatchString(k) }

// Validate returns every problem with o's user-written fields.
func Validate(o Object) ErrorList {
	var errs ErrorList
	add := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	m := o.GetMeta()
	if msg := ValidateName(m.Name); msg != "" {
		add("metadata.name", "%s", msg)
	}
	for k := range m.Labels {
		if !labelRE.MatchString(k) || len(k) > 253 {
			add("metadata.labels."+k, "invalid label key")
		}
	}
	switch o := o.(type) {
	case *Deployment:
		s := &o.Spec
		if strings.TrimSpace(s.Image) == "" {
			add("spec.image", "required")
		}
		if msg := ValidateName(s.Credentials); msg != "" {
			add("spec.credentials", "%s", msg)
		}
		seen := map[string]bool{}
		for i, b := range s.Secrets {
			f := fmt.Sprintf("spec.secrets[%d]", i)
			if msg := ValidateName(b); msg != "" {
				add(f, "%s", msg)
			} else if seen[b] {
				add(f, "bundle %q is listed twice", b)
			}
			seen[b] = true
		}
		for _, k := range slices.Sorted(maps.Keys(s.Env)) {
			if !ValidEnvKey(k) {
				add("spec.env."+k, "%q is not a valid environment variable name", k)
			}
		}
		if src := s.Source; src != nil {
			if msg := ValidateGitURL(src.Git); msg != "" {
				add("spec.source.git", "%s", msg)
			}
			if !commitRE.MatchString(src.Commit) {
				add("spec.source.commit", "want a full commit SHA (40 lower-case hex digits), got %q: a branch or tag can move", src.Commit)
			}
			if src.Path != "" {
				if msg := validateContainerPath(src.Path); msg != "" {
					add("spec.source.path", "%s", msg)
				}
			}
		}
		validateBuckets(s, add)
		if f := s.Spot.Fallback; f != "" && f != SpotFallbackOnDemand {
			add("spec.spot.fallback", "unknown fallback %q (onDemand)", f)
		}
		if r := s.Spot.OnRebalance; r != "" && r != SpotRebalanceReplace && r != SpotRebalanceIgnore {
			add("spec.spot.onRebalance", "unknown action %q (replace or ignore)", r)
		}
		if a := s.AWS; a != nil {
			seenSubnet := map[string]bool{}
			for i, id := range a.SubnetIDs {
				f := fmt.Sprintf("spec.aws.subnetIds[%d]", i)
				switch {
				case !strings.HasPrefix(id, "subnet-"):
					add(f, "%q is not a subnet id (subnet-...)", id)
				case seenSubnet[id]:
					add(f, "subnet %s is listed twice", id)
				}
				seenSubnet[id] = true
			}
			if a.SubnetID != "" && len(a.SubnetIDs) > 0 {
				add("spec.aws.subnetId", "set either subnetId or subnetIds, not both")
			}
			if a.BootTimeout != "" {
				if d, err := time.ParseDuration(a.BootTimeout); err != nil || d < time.Minute {
					add("spec.aws.bootTimeout", "%q is not a duration of at least 1m (such as 15m)", a.BootTimeout)
				}
			}
			if a.MetadataHopLimit != 0 && (a.MetadataHopLimit < 1 || a.MetadataHopLimit > 64) {
				add("spec.aws.metadataHopLimit", "%d is out of range (1 to 64)", a.MetadataHopLimit)
			}
			switch r := a.IAMRole; {
			case r == "", r == IAMRoleManaged, r == IAMRoleNone:
			case !instanceProfileRE.MatchString(r):
				add("spec.aws.iamRole", "%q is not managed, none or an instance profile ARN (arn:aws:iam::ACCOUNT:instance-profile/NAME)", r)
			}
			for i, arn := range a.PolicyARNs {
				if !policyRE.MatchString(arn) {
					add(fmt.Sprintf("spec.aws.policyArns[%d]", i), "%q is not a policy ARN (arn:aws:iam::ACCOUNT:policy/NAME)", arn)
				}
			}
			if len(a.PolicyARNs) > 0 && s.IAMRole() != IAMRoleManaged {
				add("spec.aws.policyArns", "attach to the managed role only: set iamRole: managed")
			}
		}
	case *SecretBundle:
		s := &o.Spec
		where := map[string]string{}
		note := func(field, k string) {
			f := field + "." + k
			if field == "spec.fromEnv" {
				f = field
			}
			switch {
			case !ValidEnvKey(k):
				e := badKey(field, k)
				if field == "spec.fromEnv" {
					e.Lookup = fmt.Sprintf("spec.fromEnv[%d]", slices.Index(s.FromEnv, k))
				}
				errs = append(errs, e)
				return
			case where[k] != "":
				add(f, "key %q is also set in %s", k, where[k])
			}
			where[k] = field
		}
		for _, k := range s.FromEnv {
			note("spec.fromEnv", k)
		}
		for _, k := range slices.Sorted(maps.Keys(s.Sealed)) {
			note("spec.sealed", k)
		}
		for _, k := range slices.Sorted(maps.Keys(s.StringData)) {
			note("spec.stringData", k)
			if ValidEnvKey(k) {
				if msg := CheckSecretValue(s.StringData[k]); msg != "" {
					add("spec.stringData."+k, "%s", msg)
				}
			}
		}
		total := 0
		for k, v := range s.StringData {
			total += len(k) + len(v)
		}
		for k, v := range s.Sealed {
			total += len(k) + len(v)*3/4 // base64 of box-sealed values, a little larger than theirs
		}
		if total > MaxBundleBytes {
			add("spec", "the bundle's keys and values are %s; the limit is %s per bundle", byteSize(total), byteSize(MaxBundleBytes))
		}
	case *Credentials:
		s := &o.Spec
		switch s.Provider {
		case ProviderAWS:
			if m.Name == LocalCredentials {
				add("metadata.name", "%q is reserved for the local Docker provider", LocalCredentials)
			}
			if a := s.AWS; a != nil {
				if a.Profile != "" && a.AccessKeyID != "" {
					add("spec.aws.profile", "set either profile or accessKeyId, not both")
				}
				if a.AccessKeyID == "" && a.SecretAccessKeyFromEnv != "" {
					add("spec.aws.secretAccessKeyFromEnv", "needs spec.aws.accessKeyId")
				}
				if a.EndpointURL != "" && !strings.HasPrefix(a.EndpointURL, "http://") && !strings.HasPrefix(a.EndpointURL, "https://") {
					add("spec.aws.endpointURL", "must be an http:// or https:// URL")
				}
				switch a.Interruptions {
				case "", InterruptionsAuto, InterruptionsOff:
				default:
					add("spec.aws.interruptions", "unknown mode %q (auto or off)", a.Interruptions)
				}
				if a.InterruptionQueue != "" && a.Interruptions == InterruptionsOff {
					add("spec.aws.interruptionQueue", "set with interruptions: off; drop one")
				}
			}
		case ProviderLocal:
			if s.AWS != nil {
				add("spec.aws", "not allowed with provider local")
			}
		case "":
			add("spec.provider", "required (aws or local)")
		default:
			add("spec.provider", "unknown provider %q (aws or local)", s.Provider)
		}
	}
	return errs
}

// badKey reports a key of field (a mapping of environment variable names,
// or fromEnv) that is not a valid name, without its text: such a key is
// usually a value in the wrong place, and the error must not print it.
// The line still points at it.
func badKey(field, k string) *FieldError {
	hint := ""
	switch {
	case strings.Contains(k, "="):
		hint = " (write KEY: value, not KEY=value)"
	case strings.ContainsAny(k, " \t"):
		hint = " (is a ':' missing after the key?)"
	}
	return &FieldError{
		Field:  field,
		Msg:    "a key is not a valid environment variable name (letters, digits and '_', not starting with a digit); it is not shown, as it may be a value" + hint,
		Lookup: field + "." + k,
	}
}

// sensitiveWords mark an env key that probably holds a secret.
var sensitiveWords = []string{"TOKEN", "SECRET", "PASSWORD", "PASSWD", "KEY", "CREDENTIAL", "PRIVATE", "AUTH", "PWD", "CERT"}

// SensitiveEnvKeys returns the keys of env that look like they hold a
// secret, sorted. It is advice: such a key belongs in a SecretBundle.
func SensitiveEnvKeys(env map[string]string) []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(env)) {
		u := strings.ToUpper(k)
		for _, w := range sensitiveWords {
			if strings.Contains(u, w) {
				out = append(out, k)
				break
			}
		}
	}
	return out
}

// ParseKind turns the names kubectl users type (singular, plural, short,
// any case) into a Kind.
func ParseKind(s string) (Kind, error) {
	switch strings.ToLower(s) {
	case "deployment", "deployments", "deploy":
		return KindDeployment, nil
	case "secretbundle", "secretbundles", "sb", "secret", "secrets":
		return KindSecretBundle, nil
	case "credentials", "credential", "creds", "cred":
		return KindCredentials, nil
	}
	return "", fmt.Errorf("unknown kind %q (deployments|deploy, secretbundles|sb, credentials|creds)", s)
}

// Plural is the lower-case plural name of k, used in API paths.
func Plural(k Kind) string {
	switch k {
	case KindDeployment:
		return "deployments"
	case KindSecretBundle:
		return "secretbundles"
	case KindCredentials:
		return "credentials"
	}
	return strings.ToLower(string(k)) + "s"
}
