package cloudemu

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/moby/moby/client"

	"github.com/anycloud/anycloud/internal/ec2proxy"
)

// Options configure an Emulator.
type Options struct {
	// Moto is the URL of a moto_server to use; empty starts one.
	Moto string
	// MotoPort is the port of the moto_server to start (0: any free port).
	MotoPort int
	// Addr is where the EC2 endpoint (the proxy) listens (default
	// 127.0.0.1 on a free port).
	Addr string
	// Image is the VM image tag (scripts/vm-image.sh --tag).
	Image  string
	Docker *client.Client
	// Dir holds moto's log and the VMs' seeds.
	Dir     string
	Regions []string
	// BootDelay holds every VM back this long before it boots.
	BootDelay time.Duration
	Log       logr.Logger
}

// Emulator is moto, the VM emulator and the proxy in front of moto that
// makes them one EC2 (see the package documentation).
type Emulator struct {
	// Endpoint is the EC2 endpoint to give clients: the proxy.
	Endpoint string
	// Moto is moto's own URL, for outside observers (the AWS CLI) whose
	// calls must not be counted.
	Moto  string
	Proxy *ec2proxy.Proxy
	VMs   *VMs

	moto   *Moto
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// Start starts the emulator; Close stops it and removes every VM.
func Start(ctx context.Context, o Options) (*Emulator, error) {
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, err
	}
	e := &Emulator{Moto: o.Moto, done: make(chan struct{})}
	if e.Moto == "" {
		m, err := StartMoto(ctx, filepath.Join(o.Dir, "moto.log"), o.MotoPort)
		if err != nil {
			return nil, err
		}
		e.moto, e.Moto = m, m.Endpoint
	}
	addr := o.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	proxy, err := ec2proxy.Listen(e.Moto, addr)
	if err != nil {
		e.stopMoto()
		return nil, err
	}
	vms, err := NewVMs(VMOptions{
		Endpoint: e.Moto, Regions: o.Regions, Image: o.Image, Docker: o.Docker,
		Dir: filepath.Join(o.Dir, "seeds"), BootDelay: o.BootDelay, Log: o.Log,
	})
	if err != nil {
		proxy.Close()
		e.stopMoto()
		return nil, err
	}
	if err := vms.Sync(ctx); err != nil {
		proxy.Close()
		e.stopMoto()
		return nil, fmt.Errorf("cloud emulator: %w", err)
	}
	proxy.EmulateInstances(vms)
	e.Proxy, e.VMs, e.Endpoint = proxy, vms, proxy.URL()
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	e.cancel = cancel
	go func() {
		defer close(e.done)
		vms.Run(runCtx)
	}()
	return e, nil
}

// Close stops following moto, removes every VM and what they started,
// and stops the proxy and the moto it started.
func (e *Emulator) Close() error {
	var err error
	e.once.Do(func() {
		e.cancel()
		<-e.done
		err = e.Proxy.Close()
		e.stopMoto()
	})
	return err
}

func (e *Emulator) stopMoto() {
	if e.moto != nil {
		e.moto.Stop()
	}
}
