package cloudemu

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// ImageTag is the tag the VM image has when built from the inputs in the
// repository at root: scripts/vm-image.sh --tag, which hashes them.
func ImageTag(ctx context.Context, root string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "bash", filepath.Join(root, "scripts", "vm-image.sh"), "--tag").Output()
	if err != nil {
		return "", fmt.Errorf("scripts/vm-image.sh --tag: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}
