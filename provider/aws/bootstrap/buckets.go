package bootstrap

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// Where buckets live on the VM: each bucket's copy in a directory of
// DefaultBucketRoot/<container>/<index>, bind-mounted at its path in the
// container (not synced to that path on the VM itself, where a path such
// as /etc or /usr would overwrite the VM's own), with the sync script
// beside them; what changes or must not reach a disk (session
// credentials, the last result of each sync, the sync loop's pid) in
// DefaultRunRoot/<container> on tmpfs.
const (
	DefaultBucketRoot = "/var/lib/anycloud/buckets"
	DefaultRunRoot    = "/run/anycloud"
)

// Bucket is one bucket prefix that rclone syncs on the VM.
type Bucket struct {
	Bucket, Prefix string
	// Path is the directory in the container.
	Path      string
	ReadWrite bool
	// Interval is how often a read-write bucket is copied back.
	Interval time.Duration
	// Region and Endpoint (an S3 endpoint override, "" for AWS's) of the
	// bucket's account.
	Region, Endpoint string
	// Session holds credentials minted for a bucket of another account;
	// nil reads the bucket with the VM's instance role (rclone env_auth:
	// the instance metadata service), so that no key is on the VM.
	Session *Session
}

// Session is short-lived credentials for one bucket.
type Session struct{ AccessKeyID, SecretAccessKey, SessionToken string }

// String never shows the keys.
func (s Session) String() string { return "bootstrap.Session{keys: redacted}" }

// GoString never shows the keys.
func (s Session) GoString() string { return s.String() }

// ErrBucketSync is wrapped by Run's error when a bucket could not be
// copied to the VM before the workload starts.
var ErrBucketSync = errors.New("bucket sync failed")

// SyncResult is one bucket's last sync on the VM.
type SyncResult struct {
	Index   int
	At      time.Time
	OK      bool
	Message string
}

var (
	bucketNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)
	regionRE     = regexp.MustCompile(`^[a-z0-9-]*$`)
	keyRE        = regexp.MustCompile(`^[A-Za-z0-9/+=]*$`)
)

func checkBucket(b Bucket) error {
	switch {
	case !bucketNameRE.MatchString(b.Bucket):
		return fmt.Errorf("bucket: invalid name %q", b.Bucket)
	case strings.ContainsAny(b.Prefix, "\n\r\x00'\\"):
		return fmt.Errorf("bucket %s: invalid prefix %q", b.Bucket, b.Prefix)
	case !strings.HasPrefix(b.Path, "/") || b.Path == "/" || strings.ContainsAny(b.Path, ",:\\\n'"):
		return fmt.Errorf("bucket %s: invalid mount path %q", b.Bucket, b.Path)
	case !regionRE.MatchString(b.Region):
		return fmt.Errorf("bucket %s: invalid region %q", b.Bucket, b.Region)
	case strings.ContainsAny(b.Endpoint, " '\n\\\"$`"):
		return fmt.Errorf("bucket %s: invalid endpoint", b.Bucket)
	case b.Session != nil && (!keyRE.MatchString(b.Session.AccessKeyID) || !keyRE.MatchString(b.Session.SecretAccessKey) || !keyRE.MatchString(b.Session.SessionToken)):
		return fmt.Errorf("bucket %s: session credentials with unexpected characters", b.Bucket)
	}
	return nil
}

// bucketDir is bucket i's copy on the VM.
func bucketDir(name string, i int) string { return fmt.Sprintf("%s/%s/%d", DefaultBucketRoot, name, i) }

func syncScriptPath(name string) string { return DefaultBucketRoot + "/" + name + "/sync" }

func runDir(name string) string { return DefaultRunRoot + "/" + name }

// rcloneRemote is bucket b's rclone remote and path.
func rcloneRemote(i int, b Bucket) string {
	r := fmt.Sprintf("b%d:%s", i, b.Bucket)
	if b.Prefix != "" {
		r += "/" + strings.TrimSuffix(b.Prefix, "/")
	}
	return r
}

// syncScript is the VM's sync of w's buckets, run by root as
// `sh SCRIPT down|up|loop`: down copies every bucket to its directory
// (rclone sync for read-only ones, copy for read-write ones), up copies
// the read-write ones back (rclone sync), loop does up for each of them
// at its interval until killed. Each sync leaves its result in
// RUN/bucket-N.status ("ok TIME" or "failed TIME MESSAGE"). The rclone
// remotes are configured through its environment: an s3 remote per
// bucket, env_auth (the instance role, through the metadata service) or,
// for a bucket of another account, the session credentials in
// RUN/bucket-N.env, read when the sync runs. No key is in the script.
func syncScript(name string, buckets []Bucket) string {
	var b strings.Builder
	run := runDir(name)
	fmt.Fprintf(&b, "#!/bin/sh\n# anycloud: bucket sync of %s (down | up | loop)\nset -u\nunset AWS_CA_BUNDLE\nrun=%s\nmkdir -p \"$run\"\n", name, shellQuote(run))
	b.WriteString(`result() { # index status...
  printf '%s\n' "$*" | cut -c1-600 >"$run/bucket-$1.status.tmp" && mv -f "$run/bucket-$1.status.tmp" "$run/bucket-$1.status"
}
one() { # index args...: rclone with bucket index's session credentials, if any
  i=$1; shift
  out=$(
    if [ -f "$run/bucket-$i.env" ]; then
      while IFS='=' read -r k v; do export "$k=$v"; done <"$run/bucket-$i.env"
    fi
    rclone --config /dev/null --retries 3 --low-level-retries 5 --contimeout 10s --timeout 60s "$@" 2>&1
  )
  orc=$?
  if [ "$orc" != 0 ] && [ "$missing_ok" = 1 ] && printf '%s' "$out" | grep -q 'directory not found'; then
    orc=0 # a prefix with nothing in it yet
  fi
  if [ "$orc" = 0 ]; then
    result "$i" ok "$(date +%s)"
  else
    msg=$(printf '%s' "$out" | grep -v '^$' | tail -n 2 | tr '\n' ' ')
    result "$i" failed "$(date +%s)" "$msg"
    printf 'bucket %s: %s\n' "$i" "$msg" >&2
  fi
  return "$orc"
}
`)
	for i, bk := range buckets {
		p := fmt.Sprintf("RCLONE_CONFIG_B%d_", i)
		// With an endpoint of its own (an emulator, a private endpoint)
		// the provider is Other: rclone's AWS provider insists on
		// virtual-host addressing, which an address cannot have.
		provider := "AWS"
		if bk.Endpoint != "" {
			provider = "Other"
		}
		fmt.Fprintf(&b, "export %sTYPE=s3 %sPROVIDER=%s %sNO_CHECK_BUCKET=true %sENV_AUTH=%v", p, p, provider, p, p, bk.Session == nil)
		if bk.Region != "" {
			fmt.Fprintf(&b, " %sREGION=%s", p, bk.Region)
		}
		if bk.Endpoint != "" {
			fmt.Fprintf(&b, " %sENDPOINT=%s %sFORCE_PATH_STYLE=true", p, shellQuote(bk.Endpoint), p)
		}
		b.WriteString("\n")
	}
	b.WriteString("missing_ok=0\ndown() {\n  rc=0 missing_ok=1\n")
	for i, bk := range buckets {
		verb := "sync"
		if bk.ReadWrite {
			verb = "copy"
		}
		fmt.Fprintf(&b, "  mkdir -p %s && one %d %s %s %s || rc=1\n", bucketDir(name, i), i, verb, shellQuote(rcloneRemote(i, bk)), bucketDir(name, i))
	}
	b.WriteString("  return $rc\n}\nup() {\n  rc=0 missing_ok=0\n")
	for i, bk := range buckets {
		if bk.ReadWrite {
			fmt.Fprintf(&b, "  one %d sync %s %s || rc=1\n", i, bucketDir(name, i), shellQuote(rcloneRemote(i, bk)))
		}
	}
	b.WriteString("  return $rc\n}\nloop() {\n")
	for i, bk := range buckets {
		if bk.ReadWrite {
			secs := int(bk.Interval / time.Second)
			if secs < 1 {
				secs = 300
			}
			fmt.Fprintf(&b, "  ( while sleep %d; do one %d sync %s %s; done ) &\n", secs, i, bucketDir(name, i), shellQuote(rcloneRemote(i, bk)))
		}
	}
	b.WriteString("  wait\n}\ncase ${1:-} in\ndown) down ;;\nup) up ;;\nloop) loop ;;\n*) echo \"usage: $0 down|up|loop\" >&2; exit 2 ;;\nesac\n")
	return b.String()
}

// writeSecretScript writes session credentials to a tmpfs (tmpfs.go).
var writeSecretScript = writeOnTmpfs("credentials")

// startLoop ends the sync loop of an earlier bootstrap, if any, and, with
// "$3" = yes, starts the script "$2" looping in the background, its pid in
// "$1".
const startLoop = `set -eu
if [ -f "$1" ]; then kill -- "-$(cat "$1")" 2>/dev/null || kill "$(cat "$1")" 2>/dev/null || true; rm -f -- "$1"; fi
if [ "$3" = yes ]; then
  setsid sh "$2" loop </dev/null >/dev/null 2>&1 &
  echo $! >"$1"
fi`

// syncBuckets puts w's buckets on the VM before its container starts:
// the session credentials of other accounts' buckets into root-only files
// on tmpfs (over the session's standard input), the sync script, a first
// copy of every bucket (its failure is Run's), and the loop that copies
// the read-write ones back. It returns the bind mounts for docker run.
func syncBuckets(ctx context.Context, client *ssh.Client, root bool, w Workload) ([]string, error) {
	if len(w.Buckets) == 0 {
		return nil, nil
	}
	var secrets []string
	for i, b := range w.Buckets {
		if err := checkBucket(b); err != nil {
			return nil, err
		}
		if b.Session == nil {
			continue
		}
		secrets = append(secrets, b.Session.SecretAccessKey, b.Session.SessionToken)
		p := fmt.Sprintf("RCLONE_CONFIG_B%d_", i)
		env := fmt.Sprintf("%sACCESS_KEY_ID=%s\n%sSECRET_ACCESS_KEY=%s\n%sSESSION_TOKEN=%s\n", p, b.Session.AccessKeyID, p, b.Session.SecretAccessKey, p, b.Session.SessionToken)
		file := fmt.Sprintf("%s/bucket-%d.env", runDir(w.Name), i)
		if _, err := command(ctx, client, root, []byte(env), "sh", "-c", writeSecretScript, "sh", file); err != nil {
			return nil, redactAll(fmt.Errorf("write the session credentials of bucket %s to %s: %w", b.Bucket, file, err), secrets)
		}
	}
	script := syncScript(w.Name, w.Buckets)
	if _, err := command(ctx, client, root, []byte(script), "sh", "-c", writeEnvScript, "sh", syncScriptPath(w.Name)); err != nil {
		return nil, fmt.Errorf("write the bucket sync script: %w", err)
	}
	if _, err := command(ctx, client, root, nil, "sh", "-c", startLoop, "sh", runDir(w.Name)+"/sync.pid", syncScriptPath(w.Name), "no"); err != nil {
		return nil, fmt.Errorf("stop the earlier bucket sync: %w", err)
	}
	if _, err := command(ctx, client, root, nil, "sh", "-c", "command -v rclone >/dev/null || { echo 'rclone is not installed on the VM' >&2; exit 1; }"); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBucketSync, err)
	}
	if _, err := command(ctx, client, root, nil, "sh", syncScriptPath(w.Name), "down"); err != nil {
		return nil, redactAll(fmt.Errorf("%w: copy the buckets to the VM: %w", ErrBucketSync, err), secrets)
	}
	loop := "no"
	var mounts []string
	for i, b := range w.Buckets {
		m := bucketDir(w.Name, i) + ":" + b.Path
		if b.ReadWrite {
			loop = "yes"
		} else {
			m += ":ro"
		}
		mounts = append(mounts, m)
	}
	if _, err := command(ctx, client, root, nil, "sh", "-c", startLoop, "sh", runDir(w.Name)+"/sync.pid", syncScriptPath(w.Name), loop); err != nil {
		return nil, fmt.Errorf("start the bucket sync loop: %w", err)
	}
	return mounts, nil
}

// FlushBuckets copies the read-write buckets of the workload name back
// now, on the VM behind client: before the VM ends.
func FlushBuckets(ctx context.Context, client *ssh.Client, name string) error {
	if !containerNameRE.MatchString(name) {
		return fmt.Errorf("flush buckets: invalid container name %q", name)
	}
	if _, err := command(ctx, client, client.User() == "root", nil, "sh", syncScriptPath(name), "up"); err != nil {
		return fmt.Errorf("copy the buckets of %s back: %w", name, err)
	}
	return nil
}

// SyncStatus reads the last sync of each bucket of the workload name.
func SyncStatus(ctx context.Context, client *ssh.Client, name string) ([]SyncResult, error) {
	if !containerNameRE.MatchString(name) {
		return nil, fmt.Errorf("bucket status: invalid container name %q", name)
	}
	out, err := command(ctx, client, client.User() == "root", nil, "sh", "-c",
		`cd -- "$1" 2>/dev/null || exit 0; for f in bucket-*.status; do [ -f "$f" ] && printf '%s %s\n' "$f" "$(cat -- "$f")"; done; true`, "sh", runDir(name))
	if err != nil {
		return nil, fmt.Errorf("bucket status of %s: %w", name, err)
	}
	var res []SyncResult
	for _, line := range strings.Split(string(bytes.TrimSpace(out)), "\n") {
		// "bucket-N.status N ok|failed TIME [MESSAGE]"
		file, status, _ := strings.Cut(line, " ")
		idx, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(file, "bucket-"), ".status"))
		rest := strings.SplitN(status, " ", 4)
		if err != nil || len(rest) < 3 {
			continue
		}
		r := SyncResult{Index: idx}
		r.OK = rest[1] == "ok"
		if sec, err := strconv.ParseInt(rest[2], 10, 64); err == nil {
			r.At = time.Unix(sec, 0).UTC()
		}
		if len(rest) == 4 {
			r.Message = strings.TrimSpace(rest[3])
		}
		res = append(res, r)
	}
	return res, nil
}

// redactAll replaces each secret in err's text.
func redactAll(err error, secrets []string) error {
	for _, s := range secrets {
		err = redactError(err, s)
	}
	return err
}
