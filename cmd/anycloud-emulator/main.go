// Command anycloud-emulator runs a cloud on this machine (package
// internal/cloudemu) for trying anycloud's AWS path without an AWS
// account: moto answers the EC2 API, and every instance boots a real VM —
// a container with real cloud-init, sshd and the docker CLI — on a
// loopback address of its own. It is a development tool, not part of the
// product: `make emulator` builds the VM image if needed and runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/moby/moby/client"

	"github.com/anycloud/anycloud/internal/cloudemu"
	"github.com/anycloud/anycloud/internal/controlplane"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "anycloud-emulator:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("addr", "127.0.0.1:5000", "where the EC2 endpoint listens (loopback only)")
	regions := flag.String("regions", "us-east-1,us-west-2", "regions whose instances boot VMs")
	dir := flag.String("dir", filepath.Join(os.TempDir(), "anycloud-emulator"), "moto's log and the VMs' seeds")
	root := flag.String("repo", ".", "the anycloud repository (for scripts/vm-image.sh)")
	verbose := flag.Int("v", 0, "log verbosity")
	flag.Parse()
	if h, _, _ := strings.Cut(*addr, ":"); h != "127.0.0.1" && h != "localhost" {
		return fmt.Errorf("-addr %s: the emulator listens on loopback only", *addr)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	image, err := cloudemu.ImageTag(ctx, *root)
	if err != nil {
		return fmt.Errorf("%w (run from the repository, or pass -repo)", err)
	}
	docker, err := client.New(client.FromEnv)
	if err != nil {
		return err
	}
	defer docker.Close()
	if _, err := docker.ImageInspect(ctx, image); err != nil {
		return fmt.Errorf("the VM image %s is not built: run scripts/vm-image.sh (or make emulator)", image)
	}
	log := controlplane.NewLogger(os.Stderr, *verbose)
	e, err := cloudemu.Start(ctx, cloudemu.Options{
		Addr: *addr, Image: image, Docker: docker, Dir: *dir, Regions: strings.Split(*regions, ","), Log: log,
	})
	if err != nil {
		return err
	}
	defer e.Close()
	fmt.Printf(`anycloud cloud emulator
  EC2 endpoint:  %s   (instances show their VM's loopback address; the console is the VM's)
  moto itself:   %s   (for the AWS CLI, so that its calls are not counted)
  VM image:      %s

Use it:
  AWS_SECRET_ACCESS_KEY=testing anycloud credentials new emu --provider aws --region us-east-1 \
      --access-key-id testing --endpoint-url %s
  anycloud submit anycloud-demo:latest --name hello-aws --credentials emu --vm-type t3.micro --wait
  anycloud ssh hello-aws -- sudo docker ps
Preempt a VM (from outside, as EC2 would):
  AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing aws --region us-east-1 --endpoint-url %s \
      ec2 terminate-instances --instance-ids i-...
or docker kill its VM container (docker ps --filter label=%s).
Ctrl-C stops the emulator and removes every VM.
`, e.Endpoint, e.Moto, image, e.Endpoint, e.Moto, cloudemu.LabelInstance)
	<-ctx.Done()
	fmt.Println("stopping: removing every VM")
	return nil
}
