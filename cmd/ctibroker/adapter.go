package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/ctibroker/ctibroker/adapters"
	"github.com/ctibroker/ctibroker/adapters/remote/check"
	"github.com/ctibroker/ctibroker/adapters/remote/sdk"
	"github.com/ctibroker/ctibroker/broker"
	"github.com/ctibroker/ctibroker/webhook"
)

func adapterCmd(environ []string) *cobra.Command {
	cmd := &cobra.Command{Use: "adapter", Short: "Run CTI adapters as separate processes (the adapter protocol, docs/adapters.md)"}
	cmd.AddCommand(adapterSimCmd(environ), adapterCheckCmd())
	return cmd
}

// adapterCheckCmd runs the conformance kit against an adapter.
func adapterCheckCmd() *cobra.Command {
	var addr string
	var o check.Options
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Drive an adapter through the adapter protocol's contract (the conformance kit)",
		Long: "Plays two broker nodes against the adapter at --addr: registration, logins, ready, not ready with reasons, " +
			"deadlines, an interaction's life, events only to the node that registered the agent last, reconnection. " +
			"Prints one PASS, FAIL or SKIP line per check; exits 1 when any failed. It changes the agent's state on the switch.",
		Example: "  ctibroker adapter check --addr 127.0.0.1:7070 --agent conformance",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if n := check.Run(cmd.Context(), addr, o, cmd.OutOrStdout()); n > 0 {
				return fmt.Errorf("%d checks failed", n)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:7070", "the adapter's host:port")
	cmd.Flags().StringVar(&o.Agent, "agent", "conformance", "the agent the checks log in and out")
	cmd.Flags().StringVar(&o.Channel.ID, "channel-id", "check", "the channel's id")
	cmd.Flags().StringVar(&o.Channel.Name, "channel-name", "9999", "the channel's name (its endpoint)")
	cmd.Flags().StringVar(&o.Channel.Type, "channel-type", "TELEPHONY", "the channel's type")
	cmd.Flags().StringVar(&o.Destination, "destination", "+15550199", "a destination that answers dials")
	cmd.Flags().DurationVar(&o.Timeout, "timeout", 5*time.Second, "every call's deadline and every wait for an event")
	return cmd
}

// adapterSimCmd serves the simulated switch over the adapter protocol:
// brokers dial it with adapter.kind remote.
func adapterSimCmd(environ []string) *cobra.Command {
	var listen, control, certFile, keyFile, clientCA string
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "Serve the simulated switch as an adapter process",
		Long: "Serves the simulated switch (configured by adapter.sim, from --config and CTIBROKER_ADAPTER__SIM__* as for serve) " +
			"over the adapter protocol on --listen. With --control, its HTTP control API (/v1/sim/...) listens there too, " +
			"with POST /v1/sim/link {\"up\":false,\"reason\":\"...\"} to simulate the switch link going down and coming back.",
		Example: "  ctibroker adapter sim --listen 127.0.0.1:7070 --control 127.0.0.1:7071\n" +
			"  CTIBROKER_ADAPTER__KIND=remote CTIBROKER_ADAPTER__REMOTE__ADDR=127.0.0.1:7070 ctibroker serve",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := broker.LoadConfig(cmd.Flags(), append(environ, broker.EnvPrefix+"ADAPTER__KIND=sim"))
			if err != nil {
				return err
			}
			log, _, err := broker.NewLoggers(cfg.Log)
			if err != nil {
				return err
			}
			defer func() { _ = log.Sync() }()
			sim, err := broker.NewAdapter(cfg)
			if err != nil {
				return err
			}
			defer sim.Close()
			var opts []grpc.ServerOption
			if certFile != "" {
				tc, err := serverTLS(certFile, keyFile, clientCA)
				if err != nil {
					return err
				}
				opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
			}
			srv := sdk.New(sim, log, opts...)
			lis, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "adapter listening on", lis.Addr())
			served := make(chan error, 1)
			go func() { served <- srv.Serve(lis) }()
			defer srv.Stop()
			if control != "" {
				hs, addr, err := serveSimControl(control, sim, srv, log)
				if err != nil {
					return err
				}
				defer hs.Close()
				fmt.Fprintln(cmd.OutOrStdout(), "control listening on", addr)
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
			defer stop()
			select {
			case <-ctx.Done():
				return nil
			case err := <-served:
				return err
			}
		},
	}
	cmd.Flags().String("config", "", "YAML configuration file (its adapter.sim section)")
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:7070", "address of the adapter protocol (gRPC)")
	cmd.Flags().StringVar(&control, "control", "", "address of the sim's HTTP control API (empty: none; no authentication: keep it on loopback)")
	cmd.Flags().StringVar(&certFile, "tls-cert", "", "serve TLS with this PEM certificate (and --tls-key)")
	cmd.Flags().StringVar(&keyFile, "tls-key", "", "the certificate's PEM key")
	cmd.Flags().StringVar(&clientCA, "tls-client-ca", "", "require client certificates signed by these PEM CAs (mutual TLS)")
	return cmd
}

// serverTLS is the adapter's TLS configuration: its certificate, and with
// clientCA, mutual TLS.
func serverTLS(certFile, keyFile, clientCA string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if clientCA != "" {
		pem, err := os.ReadFile(clientCA)
		if err != nil {
			return nil, fmt.Errorf("--tls-client-ca: %w", err)
		}
		tc.ClientCAs = x509.NewCertPool()
		if !tc.ClientCAs.AppendCertsFromPEM(pem) {
			return nil, errors.New("--tls-client-ca: no PEM certificate in it")
		}
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// serveSimControl serves the sim's control API and the link switch.
func serveSimControl(addr string, sim adapters.Adapter, srv *sdk.Server, log *zap.Logger) (*http.Server, net.Addr, error) {
	mux := http.NewServeMux()
	if c, ok := sim.(adapters.Controlled); ok && c.ControlHandler() != nil {
		mux.Handle("/v1/sim/", c.ControlHandler())
	}
	mux.HandleFunc("POST /v1/sim/link", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Up     bool   `json:"up"`
			Reason string `json:"reason"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&body); err != nil {
			http.Error(w, "body: {\"up\":bool,\"reason\":string}", http.StatusBadRequest)
			return
		}
		srv.SetLink(body.Up, body.Reason)
		w.WriteHeader(http.StatusAccepted)
	})
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := hs.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("sim control API stopped", zap.Error(err))
		}
	}()
	return hs, lis.Addr(), nil
}

func webhookCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "webhook", Short: "Webhook helpers"}
	cmd.AddCommand(&cobra.Command{
		Use:   "secret",
		Short: "Print a new hmac-sha256 endpoint secret (whsec_ and 32 random bytes in base64, the Standard Webhooks form)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), webhook.NewSecret())
			return err
		},
	})
	return cmd
}
