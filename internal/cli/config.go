package cli

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/anycloud/anycloud/api"
	"github.com/anycloud/anycloud/seal"
)

// ConfigFile is the client's configuration in the home: contexts, each a
// remote control plane (server URL, CA file, token), and the current one,
// as kubectl's kubeconfig has. Tokens in it are sealed with the key in
// ConfigKeyFile, never kept in the clear.
const (
	ConfigFile    = "config"
	ConfigKeyFile = "config.key"
)

// ClientConfig is the content of ConfigFile.
type ClientConfig struct {
	CurrentContext string          `json:"currentContext,omitempty"`
	Contexts       []ClientContext `json:"contexts,omitempty"`
}

// ClientContext is one control plane the CLI can talk to.
type ClientContext struct {
	Name   string `json:"name"`
	Server string `json:"server"`
	CAFile string `json:"caFile,omitempty"`
	// SealedToken is the bearer token, sealed (base64).
	SealedToken string `json:"sealedToken,omitempty"`
}

func (cfg *ClientConfig) find(name string) *ClientContext {
	for i := range cfg.Contexts {
		if cfg.Contexts[i].Name == name {
			return &cfg.Contexts[i]
		}
	}
	return nil
}

func tokenIdentity(context string) string { return "config/context/" + context + "/token" }

func loadClientConfig(home string) (*ClientConfig, error) {
	cfg := &ClientConfig{}
	b, err := os.ReadFile(filepath.Join(home, ConfigFile))
	if errors.Is(err, fs.ErrNotExist) {
		return cfg, nil
	}
	if err != nil {
		return nil, err
	}
	if err := yaml.UnmarshalStrict(b, cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(home, ConfigFile), err)
	}
	return cfg, nil
}

// homeConfig is the home directory and the client configuration in it.
func homeConfig(f *Factory) (string, *ClientConfig, error) {
	home, err := f.HomeDir()
	if err != nil {
		return "", nil, err
	}
	cfg, err := loadClientConfig(home)
	return home, cfg, err
}

func saveClientConfig(home string, cfg *ClientConfig) error {
	if err := seal.EnsureHome(home); err != nil {
		return err
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return err
	}
	path := filepath.Join(home, ConfigFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// configKey is the key that seals the config's tokens, made on first use.
func configKey(home string, create bool) (*seal.Keyring, error) {
	path := filepath.Join(home, ConfigKeyFile)
	k, err := seal.LoadFile(path)
	if errors.Is(err, fs.ErrNotExist) && create {
		return seal.CreateKey(path)
	}
	return k, err
}

// envToken is the environment variable that gives the bearer token when
// --token does not: a flag is visible to every user of the machine in ps
// and lands in shell history, the environment is not (as GH_TOKEN).
const envToken = "ANYCLOUD_TOKEN"

// remote returns the options of the remote control plane the command
// talks to: --server (with --token and --ca-file), else --context or the
// current context of the config file; ok is false for the local socket.
// The token is --token, else $ANYCLOUD_TOKEN, else the context's own.
func (f *Factory) remote(home string) (api.RemoteOptions, bool, error) {
	token := f.Token
	if token == "" {
		token = f.IO.Getenv(envToken)
	}
	if f.Server != "" {
		return api.RemoteOptions{Server: f.Server, Token: token, CAFile: f.CAFile}, true, nil
	}
	cfg, err := loadClientConfig(home)
	if err != nil {
		return api.RemoteOptions{}, false, err
	}
	name := f.Context
	if name == "" {
		name = cfg.CurrentContext
	}
	if name == "" || name == "local" {
		return api.RemoteOptions{}, false, nil
	}
	c := cfg.find(name)
	if c == nil {
		return api.RemoteOptions{}, false, fmt.Errorf("context %q is not in %s (see anycloud config get-contexts)", name, filepath.Join(home, ConfigFile))
	}
	o := api.RemoteOptions{Server: c.Server, CAFile: c.CAFile, Token: token}
	if o.Token == "" && c.SealedToken != "" {
		k, err := configKey(home, false)
		if err != nil {
			return o, false, fmt.Errorf("context %q: its token does not open: %w", name, err)
		}
		sealed, err := base64.StdEncoding.DecodeString(c.SealedToken)
		if err != nil {
			return o, false, fmt.Errorf("context %q: its token is corrupt", name)
		}
		plain, err := k.Open(tokenIdentity(name), sealed)
		if err != nil {
			return o, false, fmt.Errorf("context %q: its token does not open under %s: %w", name, filepath.Join(home, ConfigKeyFile), err)
		}
		o.Token = string(plain)
	}
	return o, true, nil
}

// remoteClient is a client of the remote control plane, if the command
// talks to one.
func (f *Factory) remoteClient(ctx context.Context, home string) (*api.Client, bool, error) {
	o, ok, err := f.remote(home)
	if err != nil || !ok {
		return nil, false, err
	}
	c, err := api.NewRemoteClient(o)
	if err != nil {
		return nil, true, err
	}
	if err := c.Ping(ctx); err != nil {
		return nil, true, fmt.Errorf("control plane at %s: %w", o.Server, err)
	}
	return c, true, nil
}

// NewCmdConfig builds `anycloud config`: the contexts of remote control
// planes.
func NewCmdConfig(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Choose the control plane the CLI talks to (contexts, as kubectl has)",
		Long: `A context names a remote control plane: its --listen URL, the CA that signs
its certificate and your token from 'anycloud users add'. Contexts live in
$ANYCLOUD_HOME/config (mode 0600); tokens in it are sealed with
$ANYCLOUD_HOME/config.key. With no current context the CLI uses the local
socket. --server, --token, --ca-file and --context override the file, and
$ANYCLOUD_TOKEN stands in for --token (a flag shows in ps; the environment
does not).`,
	}
	var server, token, caFile string
	var tokenStdin bool
	set := &cobra.Command{
		Use:   "set-context NAME --server https://HOST:PORT [--token-stdin | --token TOKEN] [--ca-file FILE]",
		Short: "Add or change a context",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if tokenStdin {
				if token != "" {
					return usageErrorf("config set-context: --token and --token-stdin both name the token; give one")
				}
				var err error
				if token, err = readTokenLine(f.IO.In); err != nil {
					return err
				}
			}
			home, cfg, err := homeConfig(f)
			if err != nil {
				return err
			}
			name := args[0]
			c := cfg.find(name)
			if c == nil {
				if server == "" {
					return usageErrorf("config set-context %s: a new context needs --server", name)
				}
				cfg.Contexts = append(cfg.Contexts, ClientContext{Name: name})
				c = &cfg.Contexts[len(cfg.Contexts)-1]
			}
			if server != "" {
				if _, err := api.NewRemoteClient(api.RemoteOptions{Server: server}); err != nil {
					return usage(err)
				}
				c.Server = server
			}
			if caFile != "" {
				if c.CAFile, err = filepath.Abs(caFile); err != nil {
					return err
				}
			}
			if token != "" {
				k, err := configKey(home, true)
				if err != nil {
					return err
				}
				sealed, err := k.Seal(tokenIdentity(name), []byte(token))
				if err != nil {
					return err
				}
				c.SealedToken = base64.StdEncoding.EncodeToString(sealed)
			}
			if err := saveClientConfig(home, cfg); err != nil {
				return err
			}
			fmt.Fprintf(f.IO.Out, "context %q set\n", name)
			return nil
		},
	}
	set.Flags().StringVar(&server, "server", "", "the control plane's --listen URL, https://HOST:PORT")
	set.Flags().StringVar(&token, "token", "", "your token from 'anycloud users add' (stored sealed; visible in ps while this runs: prefer --token-stdin)")
	set.Flags().BoolVar(&tokenStdin, "token-stdin", false, "read your token from standard input (stored sealed)")
	set.Flags().StringVar(&caFile, "ca-file", "", "the CA certificate that signs the control plane's certificate")
	use := &cobra.Command{
		Use:   "use-context NAME",
		Short: "Talk to the control plane of a context from now on ('local' for the socket)",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			home, cfg, err := homeConfig(f)
			if err != nil {
				return err
			}
			name := args[0]
			if name == "local" {
				name = ""
			} else if cfg.find(name) == nil {
				return fmt.Errorf("no context %q (see anycloud config get-contexts)", name)
			}
			cfg.CurrentContext = name
			if err := saveClientConfig(home, cfg); err != nil {
				return err
			}
			fmt.Fprintf(f.IO.Out, "switched to context %q\n", args[0])
			return nil
		},
	}
	get := &cobra.Command{
		Use:   "get-contexts",
		Short: "List the contexts; * marks the current one",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			home, cfg, err := homeConfig(f)
			if err != nil {
				return err
			}
			t := newTable(f.IO.Out, "CURRENT", "NAME", "SERVER", "CA FILE", "TOKEN")
			mark := func(name string) string {
				if name == cfg.CurrentContext {
					return "*"
				}
				return ""
			}
			t.row(mark(""), "local", "unix://"+filepath.Join(home, api.SocketFile), "", "")
			ctxs := slices.Clone(cfg.Contexts)
			slices.SortFunc(ctxs, func(a, b ClientContext) int { return cmpString(a.Name, b.Name) })
			for _, c := range ctxs {
				tok := "<none>"
				if c.SealedToken != "" {
					tok = "(sealed)"
				}
				t.row(mark(c.Name), c.Name, c.Server, orNone(c.CAFile), tok)
			}
			t.flush()
			return nil
		},
	}
	cmd.AddCommand(set, use, get)
	return cmd
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// NewCmdUsers builds `anycloud users`: who may use the API remotely.
func NewCmdUsers(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "users",
		Short: "Manage who may use the API remotely (bearer tokens)",
		Long: `Users reach the API of a control plane started with --listen, each with a
bearer token. 'users add' prints the token once: the store keeps only its
SHA-256. 'users remove' takes effect at the next request. Users are
managed on the control plane's machine (its socket), not remotely.`,
	}
	add := &cobra.Command{
		Use:   "add NAME",
		Short: "Make a user and print its token (shown this once)",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.Client(cmd.Context())
			if err != nil {
				return err
			}
			u, err := c.AddUser(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintln(f.IO.Out, u.Token)
			fmt.Fprintf(f.IO.ErrOut, "user %q added; the token above is shown only now: give it to them (anycloud config set-context NAME --server URL --token TOKEN)\n", u.Name)
			return nil
		},
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the users (never their tokens)",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.Client(cmd.Context())
			if err != nil {
				return err
			}
			users, err := c.ListUsers(cmd.Context())
			if err != nil {
				return err
			}
			if len(users) == 0 {
				fmt.Fprintln(f.IO.ErrOut, "No users. Add one: anycloud users add NAME")
				return nil
			}
			t := newTable(f.IO.Out, "NAME", "AGE")
			for _, u := range users {
				t.row(u.Name, age(f.now(), u.CreatedAt))
			}
			t.flush()
			return nil
		},
	}
	remove := &cobra.Command{
		Use:     "remove NAME",
		Aliases: []string{"rm", "delete"},
		Short:   "Remove a user: its token stops working at once",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.Client(cmd.Context())
			if err != nil {
				return err
			}
			if err := c.RemoveUser(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(f.IO.Out, "user %q removed\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(add, list, remove)
	return cmd
}

// readTokenLine reads a token from the first line of in (a pipe, a file,
// or the terminal), refusing an empty one.
func readTokenLine(in io.Reader) (string, error) {
	if in == nil {
		return "", usageErrorf("--token-stdin: no standard input")
	}
	token, err := stdinLine(in)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read the token from stdin: %w", err)
	}
	if token == "" {
		return "", usageErrorf("--token-stdin: standard input holds no token")
	}
	return token, nil
}
