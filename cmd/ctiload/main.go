// Command ctiload loads a ctibroker over real WebSockets and reports what it
// measured; loopback targets only.
//
//	ctiload --agents 100 --duration 20s                     as fast as possible
//	ctiload --agents 100 --rate 10000 --duration 20s        at a total rate
//	ctiload --agents 1000 --supervisors 50 --rate 2000      with supervisors
//	ctiload --agents 20000 --idle --sources 8               idle sessions (memory)
//	ctiload ... --baseline                                  plus the bare-WebSocket ceiling
//	ctiload echo --listen 127.0.0.1:9999 --reply 300 --event 400 --events 2
//	ctiload echo --listen 127.0.0.1:9999 --ping 30s          the idle baseline's server
//	ctiload --url ws://127.0.0.1:9999/ --bare --agents 20000 --idle  and its connections
//	ctiload centrifugo --url ws://127.0.0.1:8000/connection/websocket   the anchor server
//
// The broker must allow the load: CTIBROKER_LIMITS__COMMANDRATE=0, and for
// more than 1,000 connections CTIBROKER_LIMITS__CONNECTIONSPERIP=0.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/ctibroker/ctibroker/load"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "ctiload:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(args) > 0 && args[0] == "echo" {
		return echo(ctx, args[1:])
	}
	if len(args) > 0 && args[0] == "failover" {
		return failover(ctx, args[1:], stdout)
	}
	if len(args) > 0 && args[0] == "centrifugo" {
		return centrifugo(ctx, args[1:], stdout)
	}
	if len(args) > 0 && args[0] == "failover-b" {
		return failoverB(ctx, args[1:], stdout)
	}
	fs := pflag.NewFlagSet("ctiload", pflag.ContinueOnError)
	var cfg load.Config
	fs.StringVar(&cfg.URL, "url", "ws://127.0.0.1:8080/v1/ws", "broker WebSocket URL (loopback only)")
	fs.StringVar(&cfg.SupervisorURL, "supervisor-url", "", "where supervisors connect (default --url; another node: changes cross Redis)")
	fs.IntVar(&cfg.Agents, "agents", 100, "agent connections")
	fs.IntVar(&cfg.Supervisors, "supervisors", 0, "supervisor connections watching every agent")
	closedLoopFlags(fs, &cfg)
	fs.BoolVar(&cfg.Idle, "idle", false, "agents connect and add a channel, then stay idle")
	fs.BoolVar(&cfg.Interactions, "interactions", false, "agents run call flows (dial, hold, retrieve, release) instead of status changes; the broker's sim must answer at once (CTIBROKER_ADAPTER__SIM__DIALANSWER=0s)")
	fs.StringVar(&cfg.Prefix, "prefix", "", "agent id prefix (default: random; set it when several load processes share a broker)")
	metricsURL := fs.String("metrics", "", "broker /metrics URL (default: from --url)")
	fs.BoolVar(&cfg.Batch, "batch", false, "offer the subprotocol ctibroker.v1.batch (several messages per frame)")
	fs.BoolVar(&cfg.Compact, "compact", false, "supervisors subscribe with the compact change format")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	cpuProfile := fs.String("cpuprofile", "", "write the tool's own CPU profile to this file (is the client the bottleneck?)")
	baseline := fs.Bool("baseline", false, "also measure a bare-WebSocket echo server with the same message sizes")
	bare := fs.Bool("bare", false, "the target is a `ctiload echo` server, not a broker (with --idle: the idle-memory baseline)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// Before anything is sent anywhere: this tool only loads this machine.
	for _, u := range []string{cfg.URL, cfg.SupervisorURL} {
		if err := load.CheckLoopback(u); u != "" && err != nil {
			return err
		}
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if *metricsURL == "" {
		var err error
		if *metricsURL, err = metricsOf(cfg.URL); err != nil {
			return err
		}
	}
	before, err := load.Scrape(ctx, *metricsURL)
	if err != nil {
		return err
	}
	cfg.MetricsURL = *metricsURL
	var mem *load.BrokerMemory
	cfg.OnReady = func() {
		time.Sleep(time.Second) // let the broker settle after the connection burst
		if after, err := load.Scrape(ctx, *metricsURL); err == nil {
			mem = load.PerConnection(before, after, int64(cfg.Agents+cfg.Supervisors))
		}
	}
	run := load.Run
	if *bare {
		run = func(ctx context.Context, cfg load.Config) (load.Report, error) {
			return load.RunEcho(ctx, cfg, load.Sizes{})
		}
	}
	rep, err := run(ctx, cfg)
	if err != nil {
		return err
	}
	rep.Broker = mem
	reports := []load.Report{rep}
	if *baseline {
		base, err := runBaseline(ctx, cfg, rep)
		if err != nil {
			return err
		}
		reports = append(reports, base)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(reports)
	}
	printReports(stdout, reports)
	return nil
}

// runBaseline starts the echo server as a separate process (as the broker
// is) answering with the broker's message sizes, and loads it the same way.
func runBaseline(ctx context.Context, cfg load.Config, broker load.Report) (load.Report, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return load.Report{}, err
	}
	addr := ln.Addr().String()
	ln.Close()
	self, err := os.Executable()
	if err != nil {
		return load.Report{}, err
	}
	events := int(broker.EventsPerCommand + 0.5)
	change := 0
	if cfg.Supervisors > 0 {
		change = max(int(broker.SupEventBytes), 1)
	}
	cmd := exec.CommandContext(ctx, self, "echo", "--listen", addr,
		"--reply", strconv.Itoa(int(broker.ReplyBytes)), "--event", strconv.Itoa(int(broker.EventBytes)), "--events", strconv.Itoa(events),
		"--change", strconv.Itoa(change))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return load.Report{}, err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	for deadline := time.Now().Add(5 * time.Second); ; {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			return load.Report{}, fmt.Errorf("echo server did not start on %s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cfg.URL = "ws://" + addr + "/"
	cfg.MetricsURL = "http://" + addr + "/metrics"
	return load.RunEcho(ctx, cfg, load.Sizes{Reply: int(broker.ReplyBytes), Event: int(broker.EventBytes), Events: events, Change: change})
}

func echo(ctx context.Context, args []string) error {
	fs := pflag.NewFlagSet("echo", pflag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:9999", "address (loopback)")
	var sizes load.Sizes
	fs.IntVar(&sizes.Reply, "reply", 300, "reply size in bytes")
	fs.IntVar(&sizes.Event, "event", 400, "event size in bytes")
	fs.IntVar(&sizes.Events, "events", 2, "events after each reply")
	fs.IntVar(&sizes.Change, "change", 0, "with a size, broadcast a change of it to every ?supervisor= connection after each command")
	var opts load.EchoOptions
	fs.DurationVar(&opts.PingInterval, "ping", 0, "ping every connection this often, as the broker does (0: never)")
	fs.DurationVar(&opts.PingTimeout, "pingtimeout", 10*time.Second, "close a connection whose pong has not come by then")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := load.CheckLoopback("ws://" + *listen); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	return load.ServeEcho(ctx, ln, sizes, opts)
}

// metricsOf is the /metrics URL of the server at a WebSocket URL.
func metricsOf(wsURL string) (string, error) {
	u, err := url.Parse(wsURL)
	if err != nil {
		return "", err
	}
	return "http://" + u.Host + "/metrics", nil
}

// closedLoopFlags registers the pace and the length of a closed-loop run,
// the broker's and the anchor's alike.
func closedLoopFlags(fs *pflag.FlagSet, cfg *load.Config) {
	fs.Float64Var(&cfg.Rate, "rate", 0, "total commands per second (0: as fast as possible)")
	fs.DurationVar(&cfg.Duration, "duration", 20*time.Second, "measured period (after connecting)")
	fs.IntVar(&cfg.Sources, "sources", 4, "source addresses 127.0.0.1..N")
}

// centrifugo loads a Centrifugo server the way a broker is loaded
// (load.RunCentrifugo): the anchor of issue 14, measured in the same run.
func centrifugo(ctx context.Context, args []string, stdout io.Writer) error {
	fs := pflag.NewFlagSet("centrifugo", pflag.ContinueOnError)
	var cfg load.Config
	fs.StringVar(&cfg.URL, "url", "ws://127.0.0.1:8000/connection/websocket", "Centrifugo's WebSocket URL (loopback only)")
	fs.StringVar(&cfg.MetricsURL, "metrics", "", "its /metrics URL (default: from --url)")
	fs.IntVar(&cfg.Agents, "agents", 100, "connections")
	closedLoopFlags(fs, &cfg)
	var sizes load.Sizes
	fs.IntVar(&sizes.Reply, "reply", 105, "the broker's reply size in bytes")
	fs.IntVar(&sizes.Event, "event", 298, "the broker's event size in bytes")
	fs.IntVar(&sizes.Events, "events", 2, "the broker's events per command")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := load.CheckLoopback(cfg.URL); err != nil {
		return err
	}
	if cfg.MetricsURL == "" {
		var err error
		if cfg.MetricsURL, err = metricsOf(cfg.URL); err != nil {
			return err
		}
	}
	r, err := load.RunCentrifugo(ctx, cfg, sizes)
	if err != nil {
		return err
	}
	printReports(stdout, []load.Report{r})
	return nil
}

// failover runs a failover storm (load.RunFailover) and prints its report.
func failover(ctx context.Context, args []string, stdout io.Writer) error {
	fs := pflag.NewFlagSet("failover", pflag.ContinueOnError)
	var cfg load.FailoverConfig
	fs.StringVar(&cfg.URL, "url", "", "node A's WebSocket URL (loopback only)")
	fs.StringVar(&cfg.FailoverURL, "failover-url", "", "node B's WebSocket URL, same Redis")
	fs.IntVar(&cfg.KillPID, "kill-pid", 0, "node A's process id: SIGKILL after the warm-up")
	fs.IntVar(&cfg.Agents, "agents", 5000, "agents on node A")
	fs.IntVar(&cfg.AgentsB, "agents-b", 100, "agents on node B (their round trips are measured through the storm)")
	fs.Float64Var(&cfg.Rate, "rate", 1000, "total commands per second")
	fs.DurationVar(&cfg.Warmup, "warmup", 10*time.Second, "before the kill")
	fs.DurationVar(&cfg.After, "after", 15*time.Second, "measured after the kill")
	fs.IntVar(&cfg.Sources, "sources", 4, "source addresses 127.0.0.1..N")
	fs.StringVar(&cfg.Prefix, "prefix", "", "agent id prefix")
	fs.BoolVar(&cfg.Batch, "batch", false, "offer the subprotocol ctibroker.v1.batch")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	inProcess := fs.Bool("b-in-process", false, "run B's agents in this process (they then also measure this tool's scheduler under its reconnecting agents)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if !*inProcess {
		self, err := os.Executable()
		if err != nil {
			return err
		}
		cfg.BProcess = []string{self, "failover-b"}
	}
	r, err := load.RunFailover(ctx, cfg)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	fmt.Fprintf(stdout, "failover: %d agents on A (%d connected in all), %d on B\n", r.Agents, r.Connected, r.AgentsB)
	fmt.Fprintf(stdout, "resumed on B: %d (%.1f%%), within 5 s: %d (%.1f%%), not resumed: %d\n",
		r.Resumed, 100*float64(r.Resumed)/float64(max(r.Agents, 1)), r.Within5s, 100*float64(r.Within5s)/float64(max(r.Agents, 1)), r.NotResumed)
	fmt.Fprintf(stdout, "time to resume from the kill: p50 %d ms, p99 %d ms, max %d ms\n", r.ResumeMillis.P50, r.ResumeMillis.P99, r.ResumeMillis.Max)
	fmt.Fprintf(stdout, "events lost (seq gaps): %d; replayed duplicates: %d\n", r.Lost, r.Duplicates)
	fmt.Fprintf(stdout, "B's agents, round trip p99: before the kill %.1f ms (n=%d), after it %.1f ms (n=%d)\n",
		float64(r.BBefore.P99)/1000, r.BBefore.N, float64(r.BDuring.P99)/1000, r.BDuring.N)
	fmt.Fprintf(stdout, "commands %d; failures %v\n", r.Commands, r.Failures)
	return nil
}

// failoverB runs B's agents for a failover storm run by another ctiload
// (load.RunFailoverB): the parent talks to it on stdin and stdout.
func failoverB(ctx context.Context, args []string, stdout io.Writer) error {
	fs := pflag.NewFlagSet("failover-b", pflag.ContinueOnError)
	var cfg load.FailoverConfig
	fs.StringVar(&cfg.FailoverURL, "failover-url", "", "node B's WebSocket URL (loopback only)")
	fs.IntVar(&cfg.Agents, "agents", 0, "agents on node A (B's agents are numbered after them)")
	fs.IntVar(&cfg.AgentsB, "agents-b", 0, "agents on node B")
	interval := fs.Duration("interval", 0, "between an agent's commands")
	fs.IntVar(&cfg.Sources, "sources", 4, "source addresses 127.0.0.1..N")
	fs.StringVar(&cfg.Prefix, "prefix", "", "agent id prefix")
	fs.BoolVar(&cfg.Batch, "batch", false, "offer the subprotocol ctibroker.v1.batch")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return load.RunFailoverB(ctx, cfg, *interval, os.Stdin, stdout)
}

func printReports(w io.Writer, reports []load.Report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	row := func(cells ...any) {
		for _, c := range cells {
			fmt.Fprintf(tw, "%v\t", c)
		}
		fmt.Fprintln(tw)
	}
	row("", "mode", "conns", "cmds/s", "rtt p50 µs", "p90", "p99", "p99.9", "max", "agent ev/s", "deliv p99 ms", "sup ev/s", "sup p99 ms", "sup lost",
		"cpu µs/cmd", "cpu µs/sup msg", "max RSS MiB")
	for _, r := range reports {
		row("", r.Mode, r.Connected, fmt.Sprintf("%.0f", r.CommandsPerSec), r.RTT.P50, r.RTT.P90, r.RTT.P99, r.RTT.P999, r.RTT.Max,
			fmt.Sprintf("%.0f", r.AgentEventsPS), r.AgentDelivery.P99, fmt.Sprintf("%.0f", r.SupEventsPS), r.SupDelivery.P99, r.SupLost,
			fmt.Sprintf("%.1f", r.CPUPerCommand), fmt.Sprintf("%.2f", r.CPUPerDelivery), fmt.Sprintf("%.0f", r.RSSMax/(1<<20)))
	}
	tw.Flush()
	b := reports[0]
	fmt.Fprintf(w, "\ncommands %d in %.1fs; failures %v; connect failures %d\n", b.Commands, b.Seconds, b.Failures, b.ConnectFailures)
	fmt.Fprintf(w, "messages: reply %.0f B, event %.0f B, %.2f events per command\n", b.ReplyBytes, b.EventBytes, b.EventsPerCommand)
	if b.Supervisors > 0 {
		fmt.Fprintf(w, "supervisors: %d changes expected in all, %d lost, %d conflated, %d resync snapshots; delivery p50 %d ms, p99 %d ms, max %d ms; %.0f B per change message\n",
			b.SupExpected, b.SupLost, b.SupConflated, b.SupResyncs, b.SupDelivery.P50, b.SupDelivery.P99, b.SupDelivery.Max, b.SupEventBytes)
	}
	fmt.Fprintf(w, "batched frames: %v; broker CPU %.1f s in the measured period and drain\n", b.Batched, b.BrokerCPUSeconds)
	if b.Broker != nil {
		fmt.Fprintf(w, "broker memory: RSS %.1f -> %.1f MiB, heap %.1f -> %.1f MiB: %.1f KiB RSS and %.1f KiB heap per connection\n",
			b.Broker.RSSBefore/(1<<20), b.Broker.RSSAfter/(1<<20), b.Broker.HeapBefore/(1<<20), b.Broker.HeapAfter/(1<<20),
			b.Broker.RSSPerConnKiB, b.Broker.HeapPerConnKiB)
	}
	if len(reports) > 1 && reports[1].CommandsPerSec > 0 {
		fmt.Fprintf(w, "broker / bare-websocket command rate: %.2f\n", b.CommandsPerSec/reports[1].CommandsPerSec)
		if b.Supervisors > 0 && reports[1].SupEventsPS > 0 {
			fmt.Fprintf(w, "broker / bare-websocket supervisor deliveries: %.2f\n", b.SupEventsPS/reports[1].SupEventsPS)
		}
	}
}
