// Command ctibroker is the CTI agent-session broker.
//
//	ctibroker [serve] [--config file] [--listen addr] ...   run the broker (default)
//	ctibroker fsm                                            print the channel state machine (Mermaid)
//	ctibroker token --sub alice --role agent --teams a,b --ttl 8h   mint a JWT
//	ctibroker version
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
	"time"

	"github.com/spf13/pflag"

	"github.com/ctibroker/ctibroker/broker"
	"github.com/ctibroker/ctibroker/channel"
	"github.com/ctibroker/ctibroker/protocol"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := run(os.Args[1:], os.Environ(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "ctibroker:", err)
		os.Exit(1)
	}
}

func run(args, environ []string, stdout io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serve(args, environ)
	case "fsm":
		_, err := fmt.Fprint(stdout, channel.Mermaid())
		return err
	case "token":
		return token(args, environ, stdout)
	case "version":
		_, err := fmt.Fprintln(stdout, "ctibroker", buildVersion())
		return err
	default:
		return fmt.Errorf("unknown command %q (serve, fsm, token, version)", cmd)
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

func serve(args, environ []string) error {
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	broker.Flags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := broker.LoadConfig(fs, environ)
	if err != nil {
		return err
	}
	log, audit, err := broker.NewLoggers(cfg.Log)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync(); _ = audit.Sync() }()
	broker.SetRedisLogger(log)
	srv, err := broker.New(cfg, log, audit)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return srv.ListenAndServe(ctx)
}

func token(args, environ []string, stdout io.Writer) error {
	fs := pflag.NewFlagSet("token", pflag.ContinueOnError)
	broker.Flags(fs)
	sub := fs.String("sub", "", "agent id (sub claim)")
	role := fs.String("role", broker.RoleAgent, "role: agent, supervisor or admin")
	teams := fs.StringSlice("teams", nil, "teams, comma separated")
	ttl := fs.Duration("ttl", 8*time.Hour, "token lifetime")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := broker.LoadConfig(fs, environ)
	if err != nil {
		return err
	}
	if cfg.Auth.JWT.Secret == "" {
		return errors.New("auth.jwt.secret is not configured (set CTIBROKER_AUTH__JWT__SECRET or use --config)")
	}
	if len(cfg.Auth.JWT.Secret) < protocol.MinSecretLength {
		return fmt.Errorf("auth.jwt.secret: must be at least %d bytes for HS256", protocol.MinSecretLength)
	}
	t, err := broker.MintToken(cfg.Auth.JWT.Secret, *sub, *role, *teams, *ttl, time.Now())
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, t)
	return err
}
