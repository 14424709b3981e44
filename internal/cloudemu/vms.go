package cloudemu

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	cerrdefs "github.com/containerd/errdefs"
	"github.com/go-logr/logr"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

// Labels on the containers of the VM emulator.
const (
	// LabelEmulator is the id of the VMs that booted the container: two
	// emulators on one engine (parallel test runs) never touch each
	// other's VMs.
	LabelEmulator = "anycloud-emulator.id"
	// LabelInstance is the instance id a container belongs to: the VM
	// itself, and (set by the VM image's docker wrapper) every container
	// that VM started.
	LabelInstance = "anycloud-emulator.instance"
)

// VMOptions configure VMs; zero values take defaults.
type VMOptions struct {
	// Endpoint is moto's URL, used directly (not through the proxy).
	Endpoint string
	// Regions are the regions whose instances get VMs (default us-east-1).
	Regions []string
	// Image is the VM image tag (scripts/vm-image.sh).
	Image string
	// Docker is the engine that runs the VMs and, through its socket
	// mounted into each VM, their workloads.
	Docker *client.Client
	// DockerSocket is the engine's socket on this machine (default: from
	// DOCKER_HOST, else /var/run/docker.sock).
	DockerSocket string
	// Dir holds each VM's NoCloud seed (user-data, meta-data).
	Dir string
	// Poll is how often moto and the engine are looked at (default 200ms).
	Poll time.Duration
	// BootDelay holds every VM back this long after its instance appears
	// before it starts booting: a slow cloud, for tests of boot timeouts.
	BootDelay time.Duration
	Log       logr.Logger
}

// VMs is the VM emulator: one VM container per instance of moto's (see
// the package documentation). It implements ec2proxy.Instances.
type VMs struct {
	o      VMOptions
	id     string
	docker *client.Client
	ec2    map[string]*ec2.Client // by region, straight to moto
	iam    *iam.Client
	sts    *sts.Client

	mu  sync.Mutex
	vms map[string]*vm // by instance id
	// booting bounds concurrent boots.
	booting chan struct{}
}

// vm is what the emulator knows of one instance.
type vm struct {
	id, region string
	seen       time.Time // first seen pending or running
	container  string
	addr       string // loopback IP; "" until booted
	// stopped: we stopped the container because the instance stopped;
	// an exited container is then no preemption.
	stopped bool
	// killed: the container died on its own and the instance was
	// terminated for it.
	killed bool
	gone   bool
	// console is the last console output, kept when the container goes.
	console []byte
	// inflight: a boot is under way.
	inflight bool
	// imds is the VM's instance metadata service.
	imds *imds
}

// NewVMs returns a VM emulator; Run starts it.
func NewVMs(o VMOptions) (*VMs, error) {
	if o.Endpoint == "" || o.Image == "" || o.Docker == nil || o.Dir == "" {
		return nil, errors.New("cloudemu: VMs need an endpoint, an image, a Docker client and a directory")
	}
	if len(o.Regions) == 0 {
		o.Regions = []string{"us-east-1"}
	}
	if o.Poll == 0 {
		o.Poll = 200 * time.Millisecond
	}
	if o.DockerSocket == "" {
		o.DockerSocket = "/var/run/docker.sock"
		if h := os.Getenv("DOCKER_HOST"); strings.HasPrefix(h, "unix://") {
			o.DockerSocket = strings.TrimPrefix(h, "unix://")
		}
	}
	b := make([]byte, 6)
	rand.Read(b)
	v := &VMs{o: o, id: hex.EncodeToString(b), docker: o.Docker, ec2: map[string]*ec2.Client{}, vms: map[string]*vm{}, booting: make(chan struct{}, 4)}
	creds := credentials.NewStaticCredentialsProvider("testing", "testing", "")
	for _, r := range o.Regions {
		v.ec2[r] = ec2.New(ec2.Options{
			Region:       r,
			BaseEndpoint: sdkaws.String(o.Endpoint),
			Credentials:  creds,
			Retryer:      sdkaws.NopRetryer{},
		})
	}
	v.iam = iam.New(iam.Options{Region: "us-east-1", BaseEndpoint: sdkaws.String(o.Endpoint), Credentials: creds, Retryer: sdkaws.NopRetryer{}})
	v.sts = sts.New(sts.Options{Region: "us-east-1", BaseEndpoint: sdkaws.String(o.Endpoint), Credentials: creds, Retryer: sdkaws.NopRetryer{}})
	return v, nil
}

// ID is this emulator's id, the LabelEmulator of its containers.
func (v *VMs) ID() string { return v.id }

// Address implements ec2proxy.Instances: the VM's loopback IP once its
// container is started, "" before and after.
func (v *VMs) Address(id string) string {
	v.mu.Lock()
	defer v.mu.Unlock()
	if m := v.vms[id]; m != nil && !m.gone {
		return m.addr
	}
	return ""
}

// ConsoleOutput implements ec2proxy.Instances: what the VM wrote to its
// console (the container's log), or the last of it once the VM is gone.
func (v *VMs) ConsoleOutput(id string) ([]byte, bool) {
	v.mu.Lock()
	m := v.vms[id]
	if m == nil {
		v.mu.Unlock()
		return nil, false
	}
	ctr, kept := m.container, m.console
	v.mu.Unlock()
	if ctr == "" {
		return kept, true // not booted yet, or gone
	}
	out, err := v.logs(context.Background(), ctr)
	if err != nil {
		return kept, true
	}
	return out, true
}

// Container is the id of the instance's VM container, or "".
func (v *VMs) Container(id string) string {
	v.mu.Lock()
	defer v.mu.Unlock()
	if m := v.vms[id]; m != nil {
		return m.container
	}
	return ""
}

func (v *VMs) logs(ctx context.Context, ctr string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rc, err := v.docker.ContainerLogs(ctx, ctr, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	// Both streams into one, in order, as a serial console shows them.
	var out lockedBuffer
	_, err = stdcopy.StdCopy(&out, &out, rc)
	return out.Bytes(), err
}

// Run follows moto and the engine until ctx ends, then removes every VM
// and every container the VMs started.
func (v *VMs) Run(ctx context.Context) {
	defer v.cleanup()
	tick := time.NewTicker(v.o.Poll)
	defer tick.Stop()
	for {
		if err := v.Sync(ctx); err != nil && ctx.Err() == nil {
			v.o.Log.V(1).Info("sync failed", "error", err.Error())
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// instance is one instance as moto reports it.
type instance struct {
	id, region string
	state      types.InstanceStateName
}

// Sync makes the VMs match moto's instances once: boots what is new,
// stops and removes what moto stopped or terminated, and terminates in
// moto the instances whose VM died.
func (v *VMs) Sync(ctx context.Context) error {
	insts, err := v.instances(ctx)
	if err != nil {
		return err
	}
	ctrs, err := v.containers(ctx)
	if err != nil {
		return err
	}
	var errs []error
	now := time.Now()
	known := map[string]bool{}
	for _, in := range insts {
		known[in.id] = true
		v.mu.Lock()
		m := v.vms[in.id]
		if m == nil {
			m = &vm{id: in.id, region: in.region, seen: now}
			v.vms[in.id] = m
		}
		busy := m.inflight
		v.mu.Unlock()
		if busy {
			continue
		}
		c, hasCtr := ctrs[in.id]
		switch in.state {
		case types.InstanceStateNamePending, types.InstanceStateNameRunning:
			switch {
			case m.killed:
			case !hasCtr:
				if now.Sub(m.seen) >= v.o.BootDelay {
					v.startBoot(ctx, m)
				}
			case c.state == container.StateRunning || c.state == container.StateCreated || c.state == container.StateRestarting:
			case m.stopped:
				// The instance was started again after a stop.
				if _, err := v.docker.ContainerStart(ctx, c.id, client.ContainerStartOptions{}); err != nil {
					errs = append(errs, fmt.Errorf("restart VM %s: %w", in.id, err))
					continue
				}
				v.mu.Lock()
				m.stopped = false
				v.mu.Unlock()
			default:
				// The VM died on its own (docker kill): EC2 took it away.
				v.o.Log.Info("VM died; terminating its instance", "instance", in.id, "container", c.state)
				if _, err := v.ec2[in.region].TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{in.id}}); err != nil {
					errs = append(errs, fmt.Errorf("terminate instance %s of a dead VM: %w", in.id, err))
					continue
				}
				v.mu.Lock()
				m.killed = true
				v.mu.Unlock()
			}
		case types.InstanceStateNameStopping, types.InstanceStateNameStopped:
			if hasCtr && c.state == container.StateRunning {
				v.mu.Lock()
				m.stopped = true
				v.mu.Unlock()
				timeout := 5
				if _, err := v.docker.ContainerStop(ctx, c.id, client.ContainerStopOptions{Timeout: &timeout}); err != nil {
					errs = append(errs, fmt.Errorf("stop VM %s: %w", in.id, err))
				}
			}
		default: // shutting-down, terminated
			if err := v.remove(ctx, m); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// Containers of instances moto no longer knows.
	for id := range ctrs {
		if !known[id] {
			v.mu.Lock()
			m := v.vms[id]
			if m == nil {
				m = &vm{id: id}
				v.vms[id] = m
			}
			v.mu.Unlock()
			if err := v.remove(ctx, m); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// instances lists every instance of every region, straight from moto.
func (v *VMs) instances(ctx context.Context) ([]instance, error) {
	var out []instance
	for _, r := range v.o.Regions {
		p := ec2.NewDescribeInstancesPaginator(v.ec2[r], &ec2.DescribeInstancesInput{})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				return nil, fmt.Errorf("describe instances in %s: %w", r, err)
			}
			for _, res := range page.Reservations {
				for _, in := range res.Instances {
					if in.State == nil {
						continue
					}
					out = append(out, instance{id: sdkaws.ToString(in.InstanceId), region: r, state: in.State.Name})
				}
			}
		}
	}
	return out, nil
}

type ctrInfo struct {
	id    string
	state container.ContainerState
}

// containers are this emulator's VM containers by instance id.
func (v *VMs) containers(ctx context.Context) (map[string]ctrInfo, error) {
	res, err := v.docker.ContainerList(ctx, client.ContainerListOptions{
		All: true, Filters: make(client.Filters).Add("label", LabelEmulator+"="+v.id),
	})
	if err != nil {
		return nil, fmt.Errorf("list VM containers: %w", err)
	}
	out := map[string]ctrInfo{}
	for _, c := range res.Items {
		out[c.Labels[LabelInstance]] = ctrInfo{id: c.ID, state: c.State}
	}
	return out, nil
}

// startBoot boots m's VM in the background, a few at a time.
func (v *VMs) startBoot(ctx context.Context, m *vm) {
	v.mu.Lock()
	m.inflight = true
	v.mu.Unlock()
	go func() {
		select {
		case v.booting <- struct{}{}:
		case <-ctx.Done():
			return
		}
		defer func() { <-v.booting }()
		err := v.boot(ctx, m)
		v.mu.Lock()
		m.inflight = false
		v.mu.Unlock()
		if err != nil && ctx.Err() == nil {
			v.o.Log.Info("VM did not boot; trying again", "instance", m.id, "error", err.Error())
		}
	}()
}

// boot writes the instance's NoCloud seed and starts its VM container,
// with sshd published on a loopback address of its own.
func (v *VMs) boot(ctx context.Context, m *vm) error {
	ud, err := v.ec2[m.region].DescribeInstanceAttribute(ctx, &ec2.DescribeInstanceAttributeInput{
		InstanceId: sdkaws.String(m.id), Attribute: types.InstanceAttributeNameUserData,
	})
	if err != nil {
		return fmt.Errorf("user-data of %s: %w", m.id, err)
	}
	var userData []byte
	if ud.UserData != nil && ud.UserData.Value != nil {
		if userData, err = base64.StdEncoding.DecodeString(*ud.UserData.Value); err != nil {
			return fmt.Errorf("user-data of %s: %w", m.id, err)
		}
	}
	seed := filepath.Join(v.o.Dir, m.id)
	if err := os.MkdirAll(seed, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(seed, "user-data"), userData, 0o644); err != nil {
		return err
	}
	meta := fmt.Sprintf("instance-id: %s\nlocal-hostname: %s\n", m.id, m.id)
	if err := os.WriteFile(filepath.Join(seed, "meta-data"), []byte(meta), 0o644); err != nil {
		return err
	}
	addr, err := freeLoopback()
	if err != nil {
		return err
	}
	// The VM's /var/lib/anycloud is a directory of this machine's at the
	// same path: the shared engine resolves the workload's bind mounts of
	// it (the image's docker wrapper rewrites them to this path).
	data := seed + "-data"
	if err := os.MkdirAll(data, 0o755); err != nil {
		return err
	}
	md, err := v.startIMDS(m.id, m.region, addr.String())
	if err != nil {
		return err
	}
	yes := true
	created, err := v.docker.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name: "anycloud-vm-" + m.id + "-" + v.id,
		Config: &container.Config{
			Image:  v.o.Image,
			Env:    []string{"ANYCLOUD_VM_ADDRESS=" + addr.String(), "ANYCLOUD_VM_IMDS=" + md.URL, "ANYCLOUD_VM_HOSTDIR=" + data},
			Labels: map[string]string{LabelEmulator: v.id, LabelInstance: m.id},
		},
		HostConfig: &container.HostConfig{
			Init: &yes,
			// The host's network namespace: the VM reaches loopback
			// services (moto, a registry) as a VM reaches its cloud's, and
			// its sshd listens on the VM's own loopback address.
			NetworkMode: "host",
			// /run is a tmpfs, as on a VM: the env file written there
			// never reaches a disk.
			Tmpfs: map[string]string{"/run": "rw,nosuid,nodev,mode=755", "/run/lock": "rw,nosuid,nodev,noexec"},
			Binds: []string{
				seed + ":/var/lib/cloud/seed/nocloud:ro",
				v.o.DockerSocket + ":/run/docker.sock",
				data + ":/var/lib/anycloud",
			},
		},
	})
	if err != nil {
		md.close()
		return fmt.Errorf("create VM %s: %w", m.id, err)
	}
	if _, err := v.docker.ContainerStart(ctx, created.ID, client.ContainerStartOptions{}); err != nil {
		md.close()
		v.docker.ContainerRemove(context.WithoutCancel(ctx), created.ID, client.ContainerRemoveOptions{Force: true})
		return fmt.Errorf("start VM %s on %s: %w", m.id, addr, err)
	}
	v.mu.Lock()
	m.container, m.addr, m.imds = created.ID, addr.String(), md
	v.mu.Unlock()
	v.o.Log.Info("VM booting", "instance", m.id, "address", addr.String())
	return nil
}

// remove ends m's VM: the VM container and every container it started,
// and its seed. The console is kept for GetConsoleOutput.
func (v *VMs) remove(ctx context.Context, m *vm) error {
	v.mu.Lock()
	if m.gone || m.inflight {
		v.mu.Unlock()
		return nil
	}
	ctr := m.container
	v.mu.Unlock()
	if ctr != "" {
		if out, err := v.logs(ctx, ctr); err == nil {
			v.mu.Lock()
			m.console = out
			v.mu.Unlock()
		}
	}
	if err := v.removeContainers(ctx, m.id); err != nil {
		return err
	}
	os.RemoveAll(filepath.Join(v.o.Dir, m.id))
	os.RemoveAll(filepath.Join(v.o.Dir, m.id) + "-data")
	v.mu.Lock()
	if m.imds != nil {
		m.imds.close()
	}
	m.gone, m.container, m.addr, m.imds = true, "", "", nil
	v.mu.Unlock()
	v.o.Log.Info("VM removed", "instance", m.id)
	return nil
}

// removeContainers removes every container labelled with the instance id:
// the VM's own, and its workloads on the shared engine.
func (v *VMs) removeContainers(ctx context.Context, id string) error {
	res, err := v.docker.ContainerList(ctx, client.ContainerListOptions{
		All: true, Filters: make(client.Filters).Add("label", LabelInstance+"="+id),
	})
	if err != nil {
		return fmt.Errorf("list containers of VM %s: %w", id, err)
	}
	var errs []error
	for _, c := range res.Items {
		if _, err := v.docker.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("remove container %s of VM %s: %w", c.ID[:12], id, err))
		}
	}
	return errors.Join(errs...)
}

// cleanup removes every VM of this emulator and what they started.
func (v *VMs) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Wait for boots in flight, so that none starts a VM after cleanup.
	for range cap(v.booting) {
		v.booting <- struct{}{}
	}
	v.mu.Lock()
	ids := make([]string, 0, len(v.vms))
	for id, m := range v.vms {
		ids = append(ids, id)
		if m.imds != nil {
			m.imds.close()
		}
	}
	v.mu.Unlock()
	for _, id := range ids {
		v.removeContainers(ctx, id)
	}
	if ctrs, err := v.containers(ctx); err == nil {
		for id := range ctrs {
			v.removeContainers(ctx, id)
		}
	}
}

// freeLoopback picks an unused loopback address whose port 22 is free:
// 127.X.Y.Z with X from 100 to 199, at random, so that emulators running
// at once (parallel tests) do not collide. Every VM has its own address,
// where its sshd listens, so anycloud dials port 22 exactly as on EC2.
func freeLoopback() (netip.Addr, error) {
	for range 64 {
		n, err := rand.Int(rand.Reader, big.NewInt(100<<16))
		if err != nil {
			return netip.Addr{}, err
		}
		x := n.Int64()
		addr := netip.AddrFrom4([4]byte{127, byte(100 + x>>16), byte(x >> 8), byte(x)})
		l, err := net.Listen("tcp", netip.AddrPortFrom(addr, 22).String())
		if err != nil {
			continue
		}
		l.Close()
		return addr, nil
	}
	return netip.Addr{}, errors.New("no free loopback address with port 22 free")
}

// lockedBuffer is a bytes.Buffer for stdcopy's two writers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Bytes()
}
