// Command ctibroker is the CTI agent-session broker. `ctibroker help` lists
// its commands; the CLI is spf13/cobra's.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ctibroker/ctibroker/broker"
	"github.com/ctibroker/ctibroker/channel"
	"github.com/ctibroker/ctibroker/protocol"
	"github.com/ctibroker/ctibroker/session"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := run(os.Args[1:], os.Environ(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "ctibroker:", err)
		os.Exit(1)
	}
}

// run runs the CLI with args, the environment environ (as os.Environ) and
// stdout for what commands print.
func run(args, environ []string, stdout io.Writer) error {
	root := newRoot(environ)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stdout)
	return root.Execute()
}

func newRoot(environ []string) *cobra.Command {
	root := &cobra.Command{
		Use:   "ctibroker",
		Short: "A WebSocket CTI agent-session broker",
		Long: "ctibroker connects agent desktops (WebSocket, JSON commands) to a telephony switch through a CTI adapter,\n" +
			"and shows supervisors every agent live. `ctibroker serve` runs it; the configuration is\n" +
			"broker/defaults.yaml < --config FILE < CTIBROKER_* environment < flags.",
		Version:       buildVersion(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetVersionTemplate("ctibroker {{.Version}}\n")
	root.AddCommand(serveCmd(environ), fsmCmd(), tokenCmd(environ), versionCmd(), configCmd(environ), commandsCmd(), adapterCmd(environ), webhookCmd())
	return root
}

func serveCmd(environ []string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the broker",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := broker.LoadConfig(cmd.Flags(), environ)
			if err != nil {
				return err
			}
			log, audit, err := broker.NewLoggers(cfg.Log)
			if err != nil {
				return err
			}
			defer func() { _ = log.Sync(); _ = audit.Sync() }()
			broker.SetRedisLogger(log)
			broker.Version = buildVersion()
			srv, err := broker.New(cfg, log, audit)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
			defer stop()
			return srv.ListenAndServe(ctx)
		},
	}
	broker.Flags(cmd.Flags())
	return cmd
}

func fsmCmd() *cobra.Command {
	var ix bool
	c := &cobra.Command{
		Use:   "fsm",
		Short: "Print the channel (or interaction) state machine as a Mermaid diagram",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			diagram := channel.Mermaid()
			if ix {
				diagram = channel.IxMermaid()
			}
			_, err := fmt.Fprint(cmd.OutOrStdout(), diagram)
			return err
		},
	}
	c.Flags().BoolVar(&ix, "interaction", false, "the interaction state machine instead")
	return c
}

func tokenCmd(environ []string) *cobra.Command {
	var sub, role string
	var teams []string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Mint an HS256 JWT with the configured auth.jwt.secret",
		Example: "  ctibroker token --sub alice --role agent --teams sales,vip --ttl 8h\n" +
			"  CTIBROKER_AUTH__JWT__SECRET=... ctibroker token --sub vicky --role supervisor --teams sales",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := broker.LoadConfig(cmd.Flags(), environ)
			if err != nil {
				return err
			}
			if cfg.Auth.JWT.Secret == "" {
				return errors.New("auth.jwt.secret is not configured (set CTIBROKER_AUTH__JWT__SECRET or use --config)")
			}
			if len(cfg.Auth.JWT.Secret) < protocol.MinSecretLength {
				return fmt.Errorf("auth.jwt.secret: must be at least %d bytes for HS256", protocol.MinSecretLength)
			}
			t, err := broker.MintToken(cfg.Auth.JWT.Secret, sub, role, teams, ttl, time.Now())
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), t)
			return err
		},
	}
	cmd.Flags().String("config", "", "YAML configuration file (for auth.jwt.secret)")
	cmd.Flags().StringVar(&sub, "sub", "", "agent id (sub claim)")
	cmd.Flags().StringVar(&role, "role", broker.RoleAgent, "role: agent, supervisor or admin")
	cmd.Flags().StringSliceVar(&teams, "teams", nil, "teams, comma separated")
	cmd.Flags().DurationVar(&ttl, "ttl", 8*time.Hour, "token lifetime")
	return cmd
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), "ctibroker", buildVersion())
			return err
		},
	}
}

func configCmd(environ []string) *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Print or check a configuration"}
	print := &cobra.Command{
		Use:   "print",
		Short: "Print the effective configuration (defaults, file, environment, flags), secrets masked",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return broker.PrintConfig(cmd.OutOrStdout(), cmd.Flags(), environ)
		},
	}
	broker.Flags(print.Flags())
	check := &cobra.Command{
		Use:   "check FILE",
		Short: "Check a configuration file as `serve` would load it (with this environment)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			fs := cmd.Flags()
			broker.Flags(fs)
			if err := fs.Set("config", args[0]); err != nil {
				return err
			}
			if _, err := broker.LoadConfig(fs, environ); err != nil {
				return err
			}
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "%s: ok\n", args[0])
			return err
		},
	}
	cmd.AddCommand(print, check)
	return cmd
}

func commandsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "commands",
		Short: "List the WebSocket protocol's commands",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
			fmt.Fprintln(w, "COMMAND\tTARGET\tROLES\tWHAT IT DOES")
			for _, c := range session.Commands() {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", c.Name, c.Target, strings.Join(c.Roles, ","), c.Doc)
			}
			return w.Flush()
		},
	}
}

func buildVersion() string {
	if version != "dev" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return version
}
