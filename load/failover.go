package load

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// FailoverConfig describes a failover storm: agents on node A (URL) and
// node B (FailoverURL) of one cluster cycle statuses; after Warmup the tool
// kills A (SIGKILL to KillPID) and A's agents reconnect to B with since=,
// as a desktop does.
type FailoverConfig struct {
	URL, FailoverURL string
	Agents, AgentsB  int
	// Rate is the total commands per second over all agents.
	Rate    float64
	KillPID int
	// Warmup runs before the kill; After is how long the tool measures
	// after it (agents that have not resumed by then count as not resumed).
	Warmup, After time.Duration
	Sources       int
	Prefix        string
	Batch         bool
	// BProcess, when set, runs B's agents in another process: this argv
	// (ctiload failover-b, see RunFailoverB). Desktops are other machines:
	// measured inside the tool's own process, B's round trips would wait
	// on the tool's Go scheduler behind its thousands of reconnecting
	// agents, and measure the tool more than the broker.
	BProcess []string
}

// FailoverReport is what a storm measured.
type FailoverReport struct {
	Agents, AgentsB int
	Connected       int64
	// Resumed: A's agents whose session B resumed (resumed: true);
	// Within5s of them in 5 s of the kill; NotResumed got a new session or
	// none before the end.
	Resumed, Within5s, NotResumed int64
	ResumeMillis                  Quantiles
	// Lost counts events an agent never received: gaps in its seq, which a
	// resume with since= must fill. Duplicates are replays of what it had.
	Lost, Duplicates int64
	// B's own agents' command round trips before the kill and in the After
	// window following it (the same agents, the same run).
	BBefore, BDuring Quantiles
	Commands         int64
	Failures         map[string]int64
}

type failoverStats struct {
	*stats
	resume            *hdrhistogram.Histogram
	bBefore, bDuring  *hdrhistogram.Histogram
	resumed, within5s atomic.Int64
	lost, duplicates  atomic.Int64
	killedAt          atomic.Int64 // unix ms; 0 before the kill
}

// RunFailover runs a failover storm.
func RunFailover(ctx context.Context, cfg FailoverConfig) (FailoverReport, error) {
	for _, u := range []string{cfg.URL, cfg.FailoverURL} {
		if err := CheckLoopback(u); err != nil {
			return FailoverReport{}, err
		}
	}
	if cfg.KillPID <= 1 || cfg.Agents <= 0 || cfg.Warmup <= 0 || cfg.After <= 0 || cfg.Warmup+cfg.After > time.Hour {
		return FailoverReport{}, errors.New("failover needs a pid to kill, agents, and warm-up and after periods under an hour")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "fo" + strconv.FormatInt(time.Now().UnixNano()%1e6, 10)
	}
	st := newFailoverStats()
	if cfg.Rate <= 0 {
		return FailoverReport{}, errors.New("failover needs a command rate")
	}
	interval := time.Duration(float64(cfg.Agents+cfg.AgentsB) / cfg.Rate * float64(time.Second))
	runCtx, cancel := context.WithTimeout(ctx, cfg.Warmup+cfg.After+2*time.Minute)
	defer cancel()
	var b *bProcess
	if len(cfg.BProcess) > 0 && cfg.AgentsB > 0 {
		var err error
		if b, err = startBProcess(runCtx, cfg, interval); err != nil {
			return FailoverReport{}, err
		}
		defer b.kill()
	}
	stop := make(chan struct{})
	agents := cfg.Agents + cfg.AgentsB
	if b != nil {
		agents = cfg.Agents
	}
	wg := startAgents(runCtx, &cfg, st, interval, 0, agents, stop)
	if b != nil {
		if err := b.say(runCtx, "measure"); err != nil {
			close(stop)
			wg.Wait()
			return FailoverReport{}, err
		}
	}
	st.measuring.Store(true) // B's round trips count from now: every agent is set up
	time.Sleep(cfg.Warmup)
	st.killedAt.Store(time.Now().UnixMilli())
	if err := syscall.Kill(cfg.KillPID, syscall.SIGKILL); err != nil {
		close(stop)
		wg.Wait()
		return FailoverReport{}, fmt.Errorf("kill node A (pid %d): %w", cfg.KillPID, err)
	}
	var berr error
	if b != nil {
		berr = b.say(runCtx, "kill")
	}
	time.Sleep(cfg.After)
	// B's agents stop first: 5,000 connections closing together are the
	// tool's teardown, not load the storm puts on B.
	var br BReport
	if b != nil {
		br, berr = b.finish(berr)
	}
	close(stop)
	wg.Wait()
	if berr != nil {
		return FailoverReport{}, berr
	}
	r := FailoverReport{Agents: cfg.Agents, AgentsB: cfg.AgentsB, Connected: st.connected.Load(),
		Resumed: st.resumed.Load(), Within5s: st.within5s.Load(), ResumeMillis: quantiles(st.resume),
		Lost: st.lost.Load(), Duplicates: st.duplicates.Load(), BBefore: quantiles(st.bBefore), BDuring: quantiles(st.bDuring),
		Commands: st.commands.Load(), Failures: st.failures}
	r.NotResumed = int64(cfg.Agents) - r.Resumed
	if b != nil {
		r.Connected += br.Connected
		r.BBefore, r.BDuring, r.Commands = br.BBefore, br.BDuring, r.Commands+br.Commands
		for k, v := range br.Failures {
			r.Failures[k] += v
		}
	}
	return r, nil
}

func newFailoverStats() *failoverStats {
	return &failoverStats{stats: newStats(), resume: hdrhistogram.New(0, 600_000, 3),
		bBefore: hdrhistogram.New(1, 60_000_000, 3), bDuring: hdrhistogram.New(1, 60_000_000, 3)}
}

// BReport is what B's agents measured in their own process (RunFailoverB).
type BReport struct {
	Connected        int64
	BBefore, BDuring Quantiles
	Commands         int64
	Failures         map[string]int64
}

// RunFailoverB runs node B's agents of a storm for a parent RunFailover,
// in this process: it writes "ready" once they are set up, then reads
// "measure" (round trips count from then), "kill" (node A died: round
// trips count as during the storm) and the end of in (stop), and writes
// its BReport as JSON.
func RunFailoverB(ctx context.Context, cfg FailoverConfig, interval time.Duration, in io.Reader, out io.Writer) error {
	if err := CheckLoopback(cfg.FailoverURL); err != nil {
		return err
	}
	if cfg.AgentsB <= 0 || cfg.AgentsB > 100_000 || interval <= 0 || cfg.Prefix == "" {
		return errors.New("failover-b needs agents (at most 100,000), an interval and a prefix")
	}
	st := newFailoverStats()
	stop := make(chan struct{})
	wg := startAgents(ctx, &cfg, st, interval, cfg.Agents, cfg.AgentsB, stop)
	if _, err := fmt.Fprintln(out, "ready"); err != nil {
		close(stop)
		wg.Wait()
		return err
	}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		switch sc.Text() {
		case "measure":
			st.measuring.Store(true)
		case "kill":
			st.killedAt.Store(time.Now().UnixMilli())
		}
	}
	close(stop)
	wg.Wait()
	return json.NewEncoder(out).Encode(BReport{Connected: st.connected.Load(), BBefore: quantiles(st.bBefore),
		BDuring: quantiles(st.bDuring), Commands: st.commands.Load(), Failures: st.failures})
}

// startAgents starts the storm's agents first to first+n-1 (those from
// cfg.Agents on are B's) and returns once each is set up or gave up; they
// run until stop closes.
func startAgents(ctx context.Context, cfg *FailoverConfig, st *failoverStats, interval time.Duration, first, n int, stop <-chan struct{}) *sync.WaitGroup {
	var ready sync.WaitGroup
	wg := new(sync.WaitGroup)
	for i := first; i < first+n; i++ {
		ready.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			fa := &failoverAgent{cfg: cfg, st: st, interval: interval, onB: i >= cfg.Agents, i: i}
			fa.run(ctx, &ready, stop)
		}()
	}
	ready.Wait()
	return wg
}

// bProcess is a running RunFailoverB.
type bProcess struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines *bufio.Reader
}

func startBProcess(ctx context.Context, cfg FailoverConfig, interval time.Duration) (*bProcess, error) {
	args := slices.Concat(cfg.BProcess[1:], []string{"--failover-url", cfg.FailoverURL, "--agents", strconv.Itoa(cfg.Agents),
		"--agents-b", strconv.Itoa(cfg.AgentsB), "--interval", interval.String(), "--prefix", cfg.Prefix,
		"--sources", strconv.Itoa(cfg.Sources), "--batch=" + strconv.FormatBool(cfg.Batch)})
	cmd := exec.CommandContext(ctx, cfg.BProcess[0], args...)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start B's agents: %w", err)
	}
	b := &bProcess{cmd: cmd, in: in, lines: bufio.NewReader(out)}
	line, err := b.lines.ReadString('\n')
	if err != nil || line != "ready\n" {
		b.kill()
		return nil, fmt.Errorf("B's agents did not get ready (%q): %v", line, err)
	}
	return b, nil
}

func (b *bProcess) say(ctx context.Context, what string) error {
	if _, err := fmt.Fprintln(b.in, what); err != nil {
		return fmt.Errorf("tell B's agents %s: %w", what, err)
	}
	return ctx.Err()
}

// finish stops B's agents and reads their report.
func (b *bProcess) finish(err error) (BReport, error) {
	b.in.Close()
	var r BReport
	if err == nil {
		err = json.NewDecoder(b.lines).Decode(&r)
	}
	if werr := b.cmd.Wait(); err == nil && werr != nil {
		err = werr
	}
	if err != nil {
		return BReport{}, fmt.Errorf("B's agents: %w", err)
	}
	return r, nil
}

func (b *bProcess) kill() {
	if b.cmd.ProcessState == nil {
		_ = b.cmd.Process.Kill()
		_ = b.cmd.Wait()
	}
}

// failoverAgent is one agent of the storm; its connection is replaced when
// node A dies. A reader goroutine per connection notices the death at
// once, as a desktop does, not at the agent's next command.
type failoverAgent struct {
	cfg      *FailoverConfig
	st       *failoverStats
	onB      bool
	i        int
	interval time.Duration // between the agent's commands
	c        *conn
	msgs     chan failoverMsg // from the connection's reader
	lastSeq  uint64
}

type failoverMsg struct {
	m   message
	err error
}

func (a *failoverAgent) id() string {
	if a.onB {
		return fmt.Sprintf("%s-b%d", a.cfg.Prefix, a.i)
	}
	return fmt.Sprintf("%s-a%d", a.cfg.Prefix, a.i)
}

// saw checks an event's seq against the last one: a gap is lost events.
func (a *failoverAgent) saw(seq uint64) {
	switch {
	case seq == 0:
	case a.lastSeq != 0 && seq <= a.lastSeq:
		a.st.duplicates.Add(1)
	default:
		if a.lastSeq != 0 && seq > a.lastSeq+1 {
			a.st.lost.Add(int64(seq - a.lastSeq - 1))
		}
		a.lastSeq = seq
	}
}

// attach dials, reads up to session.initialized (within actx) and starts
// the reader (until ctx ends), returning whether the session was resumed.
func (a *failoverAgent) attach(ctx, actx context.Context, url, query string) (sid string, resumed bool, err error) {
	c, err := dial(actx, url, a.i, a.cfg.Sources, query, a.cfg.Batch)
	if err != nil {
		return "", false, err
	}
	for {
		b, err := c.next(actx)
		if err != nil {
			c.ws.CloseNow()
			return "", false, err
		}
		var m struct {
			message
			Data struct {
				Resumed bool `json:"resumed"`
			} `json:"data"`
		}
		if err := json.Unmarshal(b, &m); err != nil {
			c.ws.CloseNow()
			return "", false, err
		}
		a.saw(m.Seq)
		if m.Name == "session.initialized" {
			a.c, a.msgs = c, make(chan failoverMsg, 64)
			go func(c *conn, msgs chan<- failoverMsg) {
				for {
					m, _, err := c.read(ctx)
					msgs <- failoverMsg{m, err}
					if err != nil {
						return
					}
				}
			}(c, a.msgs)
			return m.Target, m.Data.Resumed, nil
		}
	}
}

// receive handles one message from the reader: an event is checked, a
// reply returned.
func (a *failoverAgent) receive(fm failoverMsg) (reply bool, err error) {
	if fm.err != nil {
		return false, fm.err
	}
	if fm.m.Result == "" {
		a.saw(fm.m.Seq)
		return false, nil
	}
	a.st.commands.Add(1)
	if fm.m.Failure != nil {
		a.st.fail(fm.m.Failure.Code)
	}
	return true, nil
}

func (a *failoverAgent) roundTrip(ctx context.Context, v any) (time.Duration, error) {
	t := time.Now()
	if err := a.c.send(ctx, v); err != nil {
		return 0, err
	}
	for fm := range a.msgs {
		if reply, err := a.receive(fm); err != nil || reply {
			return time.Since(t), err
		}
	}
	return 0, errClosed
}

func (a *failoverAgent) run(ctx context.Context, ready *sync.WaitGroup, stop <-chan struct{}) {
	readyOnce := sync.OnceFunc(ready.Done)
	defer readyOnce()
	url := a.cfg.URL
	if a.onB {
		url = a.cfg.FailoverURL
	}
	sid, _, err := a.attach(ctx, ctx, url, "agent="+a.id())
	if err != nil {
		a.st.connectFails.Add(1)
		return
	}
	defer func() { a.c.ws.CloseNow() }()
	a.st.connected.Add(1)
	channel := sid + ".p"
	setup := []map[string]any{
		{"command": "session.addchannel", "target": sid, "data": map[string]any{"channel": map[string]string{"id": "p", "name": a.id(), "type": "TELEPHONY"}}},
		{"command": "channel.activate", "target": channel},
	}
	for _, cmd := range setup {
		if _, err := a.roundTrip(ctx, cmd); err != nil {
			return
		}
	}
	readyOnce()
	cycle := []map[string]any{
		{"command": "channel.ready", "target": channel},
		{"command": "channel.notready", "target": channel, "data": map[string]string{"reasoncode": "lunch"}},
	}
	// Each agent paces itself, from a random phase: the storm's agents
	// must not all act in the same instant.
	next := time.NewTimer(time.Duration(rand.Int64N(int64(a.interval))))
	defer next.Stop()
	for k := 0; ; {
		var err error
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case fm := <-a.msgs:
			_, err = a.receive(fm) // an event between commands, or the connection's end
		case <-next.C:
			next.Reset(a.interval)
			var rtt time.Duration
			rtt, err = a.roundTrip(ctx, cycle[k%len(cycle)])
			k++
			if err == nil && a.onB && a.st.measuring.Load() {
				h := a.st.bBefore
				if a.st.killedAt.Load() != 0 {
					h = a.st.bDuring
				}
				a.st.record(h, rtt.Microseconds())
			}
		}
		if err == nil {
			continue
		}
		if a.onB || a.st.killedAt.Load() == 0 || !a.failover(ctx, stop) {
			return
		}
	}
}

// failover reconnects to node B with since= until the session is resumed
// (or the run ends), as a desktop does: a short pause between attempts.
func (a *failoverAgent) failover(ctx context.Context, stop <-chan struct{}) bool {
	a.c.ws.CloseNow()
	for {
		select {
		case <-stop:
			return false
		default:
		}
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, resumed, err := a.attach(ctx, actx, a.cfg.FailoverURL, "agent="+a.id()+"&since="+strconv.FormatUint(a.lastSeq, 10))
		cancel()
		if err == nil {
			if !resumed {
				return false // a new session: the old state is gone (counted as not resumed)
			}
			ms := time.Now().UnixMilli() - a.st.killedAt.Load()
			a.st.resumed.Add(1)
			if ms <= 5000 {
				a.st.within5s.Add(1)
			}
			a.st.record(a.st.resume, ms)
			return true
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-stop:
			return false
		}
	}
}
