// Package local is the provider for the machine's own Docker engine: a
// "VM" is a container, labelled with the deployment's uid and attempt.
// Killing the container (docker kill, or the workload dying) is a
// preemption, which the controller recovers like a lost spot instance.
//
// There are only a few things here: Provider (the Docker API client and
// the provider.Provider methods), the labels it puts on containers, and
// classify, which turns engine errors into provider sentinels.
package local

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/anycloud/anycloud/provider"
)

// Labels on every container anycloud makes.
const (
	LabelManaged    = "anycloud.managed"
	LabelDeployment = "anycloud.deployment"
	LabelUID        = "anycloud.uid"
	LabelAttempt    = "anycloud.attempt"
	LabelToken      = "anycloud.token"
	LabelCluster    = "anycloud.cluster"
)

// Key is the scope key of the local provider: there is one engine.
const Key = "local"

// Provider runs deployments as containers on the local Docker engine.
type Provider struct {
	docker  *client.Client
	cluster string
}

// New connects to the engine named by DOCKER_HOST, or the default socket.
// cluster is the control plane's id: its containers carry it, and List
// sees only those, so that control planes sharing an engine leave each
// other alone.
func New(cluster string) (*Provider, error) {
	c, err := client.New(client.FromEnv)
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	return &Provider{docker: c, cluster: cluster}, nil
}

// Ping checks that the engine answers.
func (p *Provider) Ping(ctx context.Context) error {
	if _, err := p.docker.Ping(ctx, client.PingOptions{}); err != nil {
		return classify(err, "ping the Docker engine")
	}
	return nil
}

// Close releases the client.
func (p *Provider) Close() error { return p.docker.Close() }

// Key implements provider.Provider.
func (p *Provider) Key() string { return Key }

// containerName is unique per (deployment, uid, attempt): the engine
// refuses a second container of the same name, which makes Launch
// idempotent for a token.
func containerName(req provider.LaunchRequest) string {
	uid := req.UID
	if len(uid) > 8 {
		uid = uid[:8]
	}
	return fmt.Sprintf("anycloud-%s-%s-%d", req.Deployment, uid, req.Attempt)
}

// Launch implements provider.Provider.
func (p *Provider) Launch(ctx context.Context, req provider.LaunchRequest) (provider.VM, error) {
	if req.Source != nil {
		return provider.VM{}, fmt.Errorf("spec.source is checked out on a VM, and the local provider has none: use aws credentials, or build the code into the image: %w", provider.ErrInvalid)
	}
	if len(req.Buckets) > 0 {
		return provider.VM{}, fmt.Errorf("spec.buckets are synced on a VM with its own IAM role, and the local provider has neither: use aws credentials: %w", provider.ErrInvalid)
	}
	// The container's name is the attempt's: a create that finds it taken
	// is a repeated launch, which returns the container made before (a
	// recovery does not pay for a lookup first).
	name := containerName(req)
	env := make([]string, 0, len(req.Env))
	for _, k := range slices.Sorted(maps.Keys(req.Env)) {
		env = append(env, k+"="+req.Env[k])
	}
	img, err := p.docker.ImageInspect(ctx, req.Image)
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return provider.VM{}, fmt.Errorf("image %q is not in the local Docker engine (build or load it first; no registry is used): %w", req.Image, provider.ErrInvalid)
		}
		return provider.VM{}, classify(err, "inspect image "+req.Image)
	}
	// Publish every port the image exposes on 127.0.0.1 only, on a port
	// the engine picks.
	bindings := network.PortMap{}
	exposed := network.PortSet{}
	if img.Config != nil {
		for spec := range img.Config.ExposedPorts {
			port, err := network.ParsePort(spec)
			if err != nil {
				continue
			}
			exposed[port] = struct{}{}
			bindings[port] = []network.PortBinding{{HostIP: netip.MustParseAddr("127.0.0.1")}}
		}
	}
	cfg := &container.Config{
		Image:        req.Image,
		Cmd:          req.Command,
		Env:          env,
		ExposedPorts: exposed,
		Labels: map[string]string{
			LabelManaged:    "true",
			LabelDeployment: req.Deployment,
			LabelUID:        req.UID,
			LabelAttempt:    strconv.Itoa(req.Attempt),
			LabelToken:      req.Token,
			LabelCluster:    p.cluster,
		},
	}
	host := &container.HostConfig{PortBindings: bindings}
	created, err := p.docker.ContainerCreate(ctx, client.ContainerCreateOptions{Config: cfg, HostConfig: host, Name: name})
	if cerrdefs.IsConflict(err) {
		// A concurrent or earlier call with the same token won.
		vm, ierr := p.inspect(ctx, name)
		if ierr != nil {
			return provider.VM{}, ierr
		}
		if vm.UID != req.UID || vm.Attempt != req.Attempt {
			return provider.VM{}, fmt.Errorf("container %s belongs to another deployment: %w", name, provider.ErrInvalid)
		}
		return p.ensureStarted(ctx, vm)
	}
	if err != nil {
		return provider.VM{}, classify(err, "create container "+name)
	}
	if _, err := p.docker.ContainerStart(ctx, created.ID, client.ContainerStartOptions{}); err != nil {
		p.docker.ContainerRemove(context.WithoutCancel(ctx), created.ID, client.ContainerRemoveOptions{Force: true})
		return provider.VM{}, fmt.Errorf("start container %s: %w: %v", name, provider.ErrInvalid, firstLine(err))
	}
	return p.inspect(ctx, created.ID)
}

func (p *Provider) ensureStarted(ctx context.Context, vm provider.VM) (provider.VM, error) {
	if vm.State != provider.StatePending {
		return vm, nil
	}
	if _, err := p.docker.ContainerStart(ctx, vm.ID, client.ContainerStartOptions{}); err != nil {
		return provider.VM{}, classify(err, "start container "+vm.ID)
	}
	return p.inspect(ctx, vm.ID)
}

// inspect reads one container by id or name.
func (p *Provider) inspect(ctx context.Context, ref string) (provider.VM, error) {
	res, err := p.docker.ContainerInspect(ctx, ref, client.ContainerInspectOptions{})
	if err != nil {
		return provider.VM{}, classify(err, "inspect container "+ref)
	}
	c := res.Container
	if c.Config == nil || c.Config.Labels[LabelManaged] != "true" || c.Config.Labels[LabelCluster] != p.cluster {
		return provider.VM{}, fmt.Errorf("container %s is not managed by anycloud: %w", ref, provider.ErrInvalid)
	}
	vm := fromLabels(c.ID, c.Config.Labels)
	vm.LaunchedAt, _ = time.Parse(time.RFC3339Nano, c.Created)
	if c.State != nil {
		vm.State, vm.Reason = mapState(c.State.Status, fmt.Sprintf("exited with code %d", c.State.ExitCode))
		vm.Crashed = c.State.Status == container.StateExited && crashed(c.State.ExitCode)
		if c.State.OOMKilled {
			vm.Reason, vm.Crashed = "out of memory (OOM killed)", true
		}
	}
	if c.NetworkSettings != nil {
		vm.Address = address(c.NetworkSettings.Ports)
	}
	return vm, nil
}

// shortID is the engine's short form of a container id, as docker ps
// shows it.
func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func fromLabels(id string, l map[string]string) provider.VM {
	attempt, _ := strconv.Atoi(l[LabelAttempt])
	return provider.VM{ID: shortID(id), Deployment: l[LabelDeployment], UID: l[LabelUID], Attempt: attempt, Market: "local"}
}

// address is the first published port, as 127.0.0.1:PORT.
func address(ports network.PortMap) string {
	var keys []string
	for p := range ports {
		keys = append(keys, p.String())
	}
	slices.Sort(keys)
	for _, k := range keys {
		for p, bs := range ports {
			if p.String() != k {
				continue
			}
			for _, b := range bs {
				if b.HostPort != "" {
					return "127.0.0.1:" + b.HostPort
				}
			}
		}
	}
	return ""
}

// crashed says whether a container that exited with code ended on its
// own. 137 and 143 are SIGKILL and SIGTERM from outside — `docker kill`,
// `docker stop`, the engine stopping: the local stand-in for a preemption.
// (An OOM kill is also 137; inspect tells it apart.)
func crashed(code int) bool { return code != 137 && code != 143 }

var exitedRE = regexp.MustCompile(`^Exited \((-?\d+)\)`)

// mapState turns an engine state into a provider state and reason.
func mapState(s container.ContainerState, exitReason string) (provider.State, string) {
	switch s {
	case container.StateRunning:
		return provider.StateRunning, ""
	case container.StateCreated, container.StateRestarting:
		return provider.StatePending, string(s)
	case container.StateRemoving:
		return provider.StateTerminated, "container being removed"
	case container.StatePaused:
		return provider.StateStopped, "container paused"
	}
	return provider.StateStopped, "container " + exitReason
}

// List implements provider.Provider: one call for every managed
// container.
func (p *Provider) List(ctx context.Context) ([]provider.VM, error) {
	res, err := p.docker.ContainerList(ctx, client.ContainerListOptions{
		All:     true,
		Filters: make(client.Filters).Add("label", LabelManaged+"=true", LabelCluster+"="+p.cluster),
	})
	if err != nil {
		return nil, classify(err, "list containers")
	}
	out := make([]provider.VM, 0, len(res.Items))
	for _, c := range res.Items {
		vm := fromLabels(c.ID, c.Labels)
		vm.LaunchedAt = time.Unix(c.Created, 0).UTC()
		reason := "exited"
		if m := exitedRE.FindStringSubmatch(c.Status); m != nil {
			reason = "exited with code " + m[1]
			code, _ := strconv.Atoi(m[1])
			vm.Crashed = crashed(code)
		}
		vm.State, vm.Reason = mapState(c.State, reason)
		if vm.State == provider.StateStopped && !vm.Crashed {
			// 137 is also what an OOM kill exits with: the listing does
			// not tell, inspect does. Stopped containers are few (each is
			// recovered and removed), so this costs little.
			if full, err := p.inspect(ctx, c.ID); err == nil {
				vm.Reason, vm.Crashed = full.Reason, full.Crashed
			}
		}
		for _, port := range c.Ports {
			if port.PublicPort != 0 {
				vm.Address = "127.0.0.1:" + strconv.Itoa(int(port.PublicPort))
				break
			}
		}
		out = append(out, vm)
	}
	return out, nil
}

// Terminate implements provider.Provider: the container is removed.
func (p *Provider) Terminate(ctx context.Context, id string) error {
	_, err := p.docker.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true})
	if err == nil || cerrdefs.IsNotFound(err) {
		return nil
	}
	// A removal already in progress is as good as done.
	if cerrdefs.IsConflict(err) && strings.Contains(err.Error(), "already in progress") {
		return nil
	}
	return classify(err, "remove container "+id)
}

// Logs implements provider.Logger.
func (p *Provider) Logs(ctx context.Context, vm provider.VM, follow bool, w io.Writer) error {
	rc, err := p.docker.ContainerLogs(ctx, vm.ID, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true, Follow: follow})
	if err != nil {
		return classify(err, "logs of container "+vm.ID)
	}
	defer rc.Close()
	_, err = stdcopy.StdCopy(w, w, rc)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// Notify implements provider.Notifier: it calls notify whenever a managed
// container starts, dies, pauses or is destroyed, until ctx ends. (A kill
// is reported by its die: the kill event comes while the container still
// runs.)
func (p *Provider) Notify(ctx context.Context, notify func()) error {
	res := p.docker.Events(ctx, client.EventsListOptions{
		Filters: make(client.Filters).Add("type", "container").Add("label", LabelManaged+"=true", LabelCluster+"="+p.cluster).
			Add("event", "start", "die", "destroy", "pause"),
	})
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-res.Err:
			if ctx.Err() != nil {
				return nil
			}
			return classify(err, "docker events")
		case <-res.Messages:
			notify()
		}
	}
}

// classify maps engine errors to provider sentinels. Messages carry no
// environment: the engine's errors name containers and images only.
func classify(err error, what string) error {
	switch {
	case err == nil:
		return nil
	case cerrdefs.IsNotFound(err):
		return fmt.Errorf("%s: %w", what, provider.ErrNotFound)
	case client.IsErrConnectionFailed(err):
		return fmt.Errorf("%s: %w: %v", what, provider.ErrUnavailable, err)
	case cerrdefs.IsInvalidArgument(err):
		return fmt.Errorf("%s: %w: %v", what, provider.ErrInvalid, firstLine(err))
	}
	return fmt.Errorf("%s: %w", what, err)
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

var _ provider.Provider = (*Provider)(nil)
var _ provider.Logger = (*Provider)(nil)
var _ provider.Notifier = (*Provider)(nil)
