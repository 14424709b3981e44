package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/anycloud/anycloud/state"
)

// BackupOptions are the options of `anycloud backup`.
type BackupOptions struct {
	f    *Factory
	File string
}

// NewCmdBackup builds `anycloud backup`.
func NewCmdBackup(f *Factory, runF func(*BackupOptions) error) *cobra.Command {
	o := &BackupOptions{f: f}
	cmd := &cobra.Command{
		Use:   "backup FILE",
		Short: "Write a consistent copy of the store, while the control plane runs",
		Long: `Write a consistent copy of the control plane's store (state.db) to FILE,
as of one moment, while it keeps serving. The copy is checked (every page,
and that it holds a store) before it replaces FILE, atomically: a failed
backup never destroys the previous one.

Secret values stay sealed in the copy: it opens only with this home's
cipher.key, and bundles sealed for this control plane (secrets seal) only
with its seal.key. Keep copies of both keys, apart from the backups. After
'anycloud keys rotate', older backups need the old cipher.key: make a new
backup.

Restore:
  anycloud down
  cp FILE ~/.anycloud/state.db      # or $ANYCLOUD_HOME/state.db
  anycloud up                       # checks the store before it serves

The restored control plane adopts the VMs the backup names (they carry
the deployments' uids) and sweeps those of deployments it does not know,
after the orphan grace period.`,
		Example: `  anycloud backup ~/backups/anycloud-$(date +%F).db`,
		Args:    exactArgs(1, "FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.File = args[0]
			if runF != nil {
				return runF(o)
			}
			return o.Run(cmd.Context())
		},
	}
	return cmd
}

// Run copies, checks and renames into place.
func (o *BackupOptions) Run(ctx context.Context) error {
	c, err := o.f.Client(ctx)
	if err != nil {
		return err
	}
	dir := filepath.Dir(o.File)
	tmp := filepath.Join(dir, "."+filepath.Base(o.File)+".partial-"+strconv.Itoa(os.Getpid()))
	fh, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer os.Remove(tmp)
	n, err := c.Backup(ctx, fh)
	if err == nil {
		err = fh.Sync()
	}
	if cerr := fh.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	objects, err := state.CheckBackup(tmp)
	if err != nil {
		return fmt.Errorf("backup: the copy does not check out, %s was left as it was: %w", o.File, err)
	}
	if err := os.Rename(tmp, o.File); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	fmt.Fprintf(o.f.IO.Out, "backed up the store to %s (%d objects, %d bytes)\n", o.File, objects, n)
	fmt.Fprintln(o.f.IO.ErrOut, "It opens only with this home's cipher.key (and sealed manifests with its seal.key): keep copies of both, apart from the backup. Restore: see `anycloud backup --help`.")
	return nil
}

// NewCmdKeys builds `anycloud keys` and its verb.
func NewCmdKeys(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Manage the cipher key that seals secret values at rest",
		Args:  exactArgs(0, "a verb: rotate"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return usageErrorf("keys: want a verb: rotate\nsee 'anycloud keys --help'")
		},
	}
	cmd.AddCommand(NewCmdKeysRotate(f, nil))
	return cmd
}

// NewCmdKeysRotate builds `anycloud keys rotate`.
func NewCmdKeysRotate(f *Factory, runF func(*Factory) error) *cobra.Command {
	return &cobra.Command{
		Use:   "rotate",
		Short: "Make a new cipher key and re-seal every secret value under it",
		Long: `Make a new cipher key and re-seal every sealed value (bundles, credentials)
under it, in one store transaction, while the control plane runs. The new
key is written to cipher.key.new first and replaces cipher.key only after
the transaction commits: a crash at any moment leaves a store that opens
(the next start finishes or drops the rotation). The old key is gone
afterwards, so backups made before the rotation need a copy of it: make a
new backup. The sealing key of 'secrets seal' (seal.key) is not changed,
so sealed manifests in Git keep opening.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if runF != nil {
				return runF(f)
			}
			c, err := f.Client(cmd.Context())
			if err != nil {
				return err
			}
			login := holdLogin(f) // sealed with the key too, outside the store
			res, err := c.RotateKey(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(f.IO.Out, "cipher key rotated: %d sealed value(s) re-sealed under the new key in %s\n", res.Records, res.KeyFile)
			login.reseal(f)
			fmt.Fprintln(f.IO.ErrOut, "Backups made before now open only with the old key, which is gone: make a new one (anycloud backup FILE).")
			return nil
		},
	}
}
