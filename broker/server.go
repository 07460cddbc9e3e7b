package broker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/ctibroker/ctibroker/adapters"
	"github.com/ctibroker/ctibroker/bus"
	"github.com/ctibroker/ctibroker/metrics"
	"github.com/ctibroker/ctibroker/protocol"
	"github.com/ctibroker/ctibroker/session"
	"github.com/ctibroker/ctibroker/store"
	"github.com/ctibroker/ctibroker/webhook"
)

// Version is the broker's version, set by the binary: /version and the
// ctibroker_build_info metric report it.
var Version = "dev"

// Server is one broker node: HTTP endpoints, WebSocket connections, sessions
// and the adapter.
type Server struct {
	cfg     Config
	log     *zap.Logger
	audit   *zap.Logger
	auth    *Authenticator
	adapter adapters.Adapter
	// control is the adapter's HTTP control API (the simulated switch's),
	// nil when it has none or it is off.
	control http.Handler
	manager *session.Manager
	store   store.Store
	mem     *store.Memory // the in-process store, without Redis
	bus     bus.Bus
	redis   redis.UniversalClient // nil without Redis
	metrics *metrics.Metrics
	reg     *prometheus.Registry

	// base is the parent context of every connection; cancelling it tears
	// everything down. Handlers must not use r.Context() after Accept.
	base     context.Context
	cancel   context.CancelFunc
	draining atomic.Bool
	// streams ends the event streams first at shutdown, so that the HTTP
	// server's graceful shutdown does not wait for them.
	streams       context.Context
	cancelStreams context.CancelFunc

	// upgrades paces WebSocket upgrades (limits.upgradespercpu); nil: no pacing.
	upgrades *rate.Limiter

	// webhooks: nil without webhooks.endpoints.
	webhooks *webhook.Dispatcher

	mu    sync.Mutex
	conns map[*wsConn]struct{}
	wg    sync.WaitGroup // connection handlers
}

// NewAdapter builds the adapter cfg selects (adapter.kind).
func NewAdapter(cfg Config) (adapters.Adapter, error) {
	kind, ok := adapters.Lookup(cfg.Adapter.Kind)
	if !ok {
		return nil, fmt.Errorf("adapter.kind: no adapter %q is compiled in", cfg.Adapter.Kind)
	}
	settings := cfg.Adapter.Settings
	if settings == nil {
		settings = kind.Config()
	}
	adapter, err := kind.New(settings, cfg.adapterEnv())
	if err != nil {
		return nil, fmt.Errorf("adapter %s: %w", cfg.Adapter.Kind, err)
	}
	return adapter, nil
}

// New builds a server from cfg. It starts nothing; see Serve.
func New(cfg Config, log, audit *zap.Logger) (*Server, error) {
	if cfg.Node.ID == "" {
		cfg.Node.ID = defaultNodeID()
	}
	adapter, err := NewAdapter(cfg)
	if err != nil {
		return nil, err
	}
	base, cancel := context.WithCancel(context.Background())
	streams, cancelStreams := context.WithCancel(base)
	s := &Server{streams: streams, cancelStreams: cancelStreams, cfg: cfg, log: log.With(zap.String("node", cfg.Node.ID)), audit: audit.With(zap.String("node", cfg.Node.ID)),
		adapter: adapter, base: base, cancel: cancel, conns: map[*wsConn]struct{}{}}
	if c, ok := adapter.(adapters.Controlled); ok {
		s.control = c.ControlHandler()
	}
	if n := cfg.Limits.UpgradesPerCPU * runtime.GOMAXPROCS(0); n > 0 {
		s.upgrades = rate.NewLimiter(rate.Limit(n), max(n/10, 1))
	}
	if s.auth, err = NewAuthenticator(base, cfg.Auth, s.log); err != nil {
		cancel()
		return nil, err
	}
	s.reg = prometheus.NewRegistry()
	s.metrics = metrics.New(s.reg)
	s.adapter = s.metrics.Adapter(adapter)
	limits := store.Limits{Events: cfg.Limits.History, EventTTL: cfg.ReplayTTL(), Timeline: cfg.Limits.Timeline, TTL: cfg.Redis.SessionTTL,
		ReplyTTL: cfg.Session.RequestIDTTL, History: cfg.History.Retention, HistorySessions: cfg.History.Sessions}
	if cfg.Redis.Enabled() {
		s.redis = newRedisClient(cfg.Redis)
		s.bus = bus.NewRedis(s.redis, cfg.Redis.Prefix, s.log)
		s.store = store.NewRedis(s.redis, cfg.Redis.Prefix, limits)
	} else {
		s.bus = bus.NewMemory()
		s.mem = store.NewMemory(limits, s.bus)
		s.store = s.mem
	}
	s.store = s.metrics.Store(s.store)
	opts := cfg.SessionOptions()
	opts.Metrics = s.metrics
	opts.Queues, _ = adapter.(adapters.QueueReporter) // the metrics wrapper hides it
	if len(cfg.Webhooks.Endpoints) > 0 {
		var q webhook.Queue = webhook.NewMemoryQueue()
		if s.redis != nil {
			q = webhook.NewRedisQueue(s.redis, cfg.Redis.Prefix)
		}
		if s.webhooks, err = webhook.New(cfg.Webhooks, cfg.Node.ID, q, s.store.AckOutbox, s.reg, s.log); err != nil {
			cancel()
			return nil, err
		}
		opts.Pusher = s.webhooks
	}
	s.manager = session.NewManager(opts, s.adapter, s.store, s.bus, s.log, s.audit)
	s.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ctibroker_sessions",
		Help: "Live sessions owned by this node."}, func() float64 { return float64(s.manager.SessionCount()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ctibroker_build_info", Help: "Always 1; the labels say which build runs.",
			ConstLabels: prometheus.Labels{"version": Version, "goversion": runtime.Version()}}, func() float64 { return 1 }))
	return s, nil
}

// housekeeping drops replay events older than their TTL from the in-process
// store (Redis bounds its streams itself), until the server stops.
func (s *Server) housekeeping() {
	if s.mem == nil {
		return
	}
	t := time.NewTicker(min(max(s.cfg.ReplayTTL()/4, time.Second), 30*time.Second))
	defer t.Stop()
	for {
		select {
		case <-t.C:
			s.mem.ExpireEvents()
		case <-s.base.Done():
			return
		}
	}
}

func newRedisClient(c RedisConfig) redis.UniversalClient {
	opts := &redis.UniversalOptions{Addrs: c.Addrs, MasterName: c.MasterName, Username: c.Username, Password: c.Password,
		DB: c.DB, DialTimeout: c.Timeout, ReadTimeout: c.Timeout, WriteTimeout: c.Timeout}
	if c.URL != "" {
		u, _ := redis.ParseURL(c.URL) // validated with the configuration
		opts.Addrs, opts.DB, opts.TLSConfig = []string{u.Addr}, u.DB, u.TLSConfig
		if u.Username != "" || u.Password != "" {
			opts.Username, opts.Password = u.Username, u.Password
		}
	}
	return redis.NewUniversalClient(opts)
}

// SetRedisLogger sends go-redis's own log lines (reconnects, dial failures)
// to log. go-redis has one logger per process, so the binary sets it once.
func SetRedisLogger(log *zap.Logger) { redis.SetLogger(redisLogger{log.Named("redis")}) }

type redisLogger struct{ log *zap.Logger }

func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	l.log.Warn(fmt.Sprintf(format, v...))
}

func defaultNodeID() string {
	host, _ := os.Hostname()
	host = strings.NewReplacer(".", "-", " ", "-").Replace(host)
	var b [3]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// Handler returns the HTTP routes.
func (s *Server) Handler() http.Handler {
	mux, _ := s.router()
	if s.cfg.Auth.Mode == AuthNone {
		return loopbackHostOnly(mux)
	}
	return mux
}

// loopbackHostOnly refuses requests that do not name a loopback host. With
// auth.mode none the broker trusts whoever reaches it on loopback; a web
// page that rebinds its own domain to 127.0.0.1 (DNS rebinding) reaches it
// too, but names its own domain in Host.
func loopbackHostOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if hh, _, err := net.SplitHostPort(host); err == nil {
			host = hh
		}
		if !isLoopback(strings.Trim(host, "[]")) {
			writeError(w, protocol.CodeForbidden, "auth.mode none answers loopback hosts only (localhost, 127.0.0.1, [::1])")
			return
		}
		h.ServeHTTP(w, r)
	})
}

// router builds the routes and lists their patterns (for the OpenAPI test).
func (s *Server) router() (*http.ServeMux, []string) {
	r := &routes{mux: http.NewServeMux()}
	r.handle("GET /v1/ws", s.serveWS)
	r.handle("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	if s.cfg.Admin.Listen == "" {
		s.adminRoutes(r)
	} else {
		r.handle("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
			ready, status := s.readiness()
			writeJSON(w, map[bool]int{true: http.StatusOK, false: http.StatusServiceUnavailable}[ready], map[string]string{"status": status})
		})
	}
	r.handle("GET /v1/agents/{id}/events", s.serveAgentEvents)
	r.handle("GET /v1/watch/agents", s.serveWatch)
	r.handle("GET /v1/watch/queues", s.serveQueueWatch)
	r.handle("GET /v1/agents", s.rest(s.listAgents))
	r.handle("GET /v1/agents/{id}", s.rest(s.getAgent))
	r.handle("GET /v1/agents/{id}/history", s.rest(s.agentHistory))
	r.handle("GET /v1/sessions/my", s.rest(s.mySessions))
	r.handle("GET /v1/sessions/{id}", s.rest(s.getSession))
	r.handle("GET /v1/reports/agents", s.rest(s.agentReports))
	r.handle("GET /v1/interactions", s.rest(s.listInteractions))
	r.handle("GET /v1/queues", s.rest(s.listQueues))
	r.handle("GET /v1/queues/{name}", s.rest(s.getQueue))
	r.handle("GET /v1/interactions/{id}", s.rest(s.getInteraction))
	r.handle("GET /v1/webhooks", s.rest(s.listWebhooks))
	r.handle("GET /v1/webhooks/{name}/deliveries", s.rest(s.webhookDeliveries))
	r.handle("POST /v1/webhooks/{name}/replay", s.rest(s.replayWebhook))
	s.webRoutes(r)
	if s.control != nil {
		for _, route := range []string{"POST /v1/sim/events", "POST /v1/sim/calls", "POST /v1/sim/interactions/{id}"} {
			r.handle(route, s.adminOnly(s.control))
		}
	}
	return r.mux, r.patterns
}

// routes registers handlers and remembers their patterns.
type routes struct {
	mux      *http.ServeMux
	patterns []string
}

func (r *routes) handle(pattern string, h http.HandlerFunc) {
	r.patterns = append(r.patterns, pattern)
	r.mux.HandleFunc(pattern, h)
}

// adminRoutes are the operators' routes: on admin.listen when set, else on
// the main listener. The version is among them: with admin.listen set,
// clients cannot read which build to attack.
func (s *Server) adminRoutes(r *routes) {
	r.handle("GET /readyz", s.serveReady)
	r.handle("GET /version", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"version": Version, "go": runtime.Version()})
	})
	r.handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}).ServeHTTP)
}

// readiness reports whether the node takes connections, and why not.
func (s *Server) readiness() (bool, string) {
	switch {
	case s.draining.Load():
		return false, "draining"
	case !s.manager.Healthy():
		return false, "store unavailable"
	default:
		return true, "ready"
	}
}

func (s *Server) serveReady(w http.ResponseWriter, _ *http.Request) {
	if ready, status := s.readiness(); !ready {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": status})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "ready", "sessions": s.manager.SessionCount(), "node": s.cfg.Node.ID})
}

// startAdmin serves the operators' routes on admin.listen.
func (s *Server) startAdmin() (*http.Server, error) {
	ln, err := net.Listen("tcp", s.cfg.Admin.Listen)
	if err != nil {
		return nil, fmt.Errorf("admin.listen %s: %w", s.cfg.Admin.Listen, err)
	}
	r := &routes{mux: http.NewServeMux()}
	r.handle("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.adminRoutes(r)
	h := s.cfg.HTTP
	srv := &http.Server{Handler: r.mux, ReadHeaderTimeout: h.ReadHeaderTimeout, ReadTimeout: h.ReadTimeout,
		WriteTimeout: h.WriteTimeout, IdleTimeout: h.IdleTimeout, MaxHeaderBytes: h.MaxHeaderBytes, ErrorLog: zap.NewStdLog(s.log)}
	go func() { _ = srv.Serve(ln) }()
	s.log.Info("admin listening", zap.String("addr", ln.Addr().String()))
	return srv, nil
}

// Serve serves on ln until ctx is cancelled, then shuts down gracefully:
// readiness turns false, every connection is closed with 1001 after its
// queued messages, and everything stops within shutdown.timeout.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.cfg.Auth.Mode == AuthNone {
		s.log.Warn("auth.mode is none: agents are trusted by their ?agent= parameter; loopback only, never in production")
	} else if kind, _ := adapters.Lookup(s.cfg.Adapter.Kind); kind.Simulated {
		s.log.Warn("adapter.kind is sim with authenticated agents: no telephony switch is connected, agents' states are simulated",
			zap.Bool("control API", s.control != nil))
	}
	capLn := newCapListener(ln, s.connectionCap(), s.cfg.Limits.ConnectionsPerIP)
	ln = capLn
	h := s.cfg.HTTP
	srv := &http.Server{Handler: capped(capLn, s.Handler()), ReadHeaderTimeout: h.ReadHeaderTimeout, ReadTimeout: h.ReadTimeout,
		WriteTimeout: h.WriteTimeout, IdleTimeout: h.IdleTimeout, MaxHeaderBytes: h.MaxHeaderBytes, ErrorLog: zap.NewStdLog(s.log)}
	if s.webhooks != nil {
		s.webhooks.Start()
	}
	managerDone := make(chan struct{})
	go func() {
		defer close(managerDone)
		if err := s.manager.Run(s.base); err != nil {
			s.log.Error("session manager stopped", zap.Error(err))
		}
	}()
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	housekeepingDone := make(chan struct{})
	go func() {
		defer close(housekeepingDone)
		s.housekeeping()
	}()
	if s.cfg.Debug.Listen != "" {
		dbg, err := s.startDebug()
		if err != nil {
			return err
		}
		defer dbg.Close()
	}
	if s.cfg.Admin.Listen != "" {
		adm, err := s.startAdmin()
		if err != nil {
			return err
		}
		defer adm.Close()
	}
	store := "memory"
	if s.cfg.Redis.Enabled() {
		store = "redis"
	}
	s.log.Info("broker listening", zap.String("version", Version), zap.String("addr", ln.Addr().String()),
		zap.String("store", store), zap.String("adapter", s.cfg.Adapter.Kind), zap.String("auth", s.cfg.Auth.Mode),
		zap.String("wallboard", "http://"+ln.Addr().String()+"/"))

	var err error
	select {
	case <-ctx.Done():
	case err = <-serveErr:
	}
	s.log.Info("shutting down", zap.Duration("timeout", s.cfg.Shutdown.Timeout))
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.Shutdown.Timeout)
	defer cancel()
	s.draining.Store(true)
	s.cancelStreams()
	_ = srv.Shutdown(sctx) // stops accepting; hijacked WebSockets are ours to close
	s.closeAll(protocol.CloseGoingAway, "broker shutting down")
	if werr := waitGroup(sctx, &s.wg); werr != nil {
		s.log.Warn("connections did not drain in time; closing them", zap.Error(werr))
	}
	s.cancel()
	s.abortAll()
	_ = waitGroup(context.Background(), &s.wg)
	<-housekeepingDone
	if merr := s.manager.Shutdown(sctx); merr != nil {
		s.log.Warn("sessions did not stop in time", zap.Error(merr))
	}
	_ = s.adapter.Close()
	s.cancel()
	<-managerDone
	if s.webhooks != nil {
		s.webhooks.Close() // after the sessions: their last messages are relayed
	}
	_ = s.bus.Close()
	_ = s.store.Close()
	if s.redis != nil {
		_ = s.redis.Close()
	}
	s.log.Info("stopped")
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// startDebug serves pprof on its own loopback listener, away from clients.
func (s *Server) startDebug() (*http.Server, error) {
	ln, err := net.Listen("tcp", s.cfg.Debug.Listen)
	if err != nil {
		return nil, fmt.Errorf("debug.listen %s: %w", s.cfg.Debug.Listen, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	s.log.Info("pprof listening", zap.String("addr", ln.Addr().String()))
	return srv, nil
}

func waitGroup(ctx context.Context, wg *sync.WaitGroup) error {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Server) closeAll(code protocol.CloseCode, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.Close(code, reason)
	}
}

// abortAll closes every connection's socket at once.
func (s *Server) abortAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.abort()
	}
}

func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		writeError(w, protocol.CodeUnavailable, "broker is shutting down")
		return
	}
	id, expires, err := s.auth.Identify(r)
	if err != nil {
		writeError(w, protocol.CodeUnauthorized, err.Error())
		return
	}
	var since *uint64
	if v := r.URL.Query().Get("since"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			writeError(w, protocol.CodeInvalidRequest, "query parameter since: not a sequence number")
			return
		}
		since = &n
	}
	if d := s.manager.ConnectWait(id, time.Now()); d > 0 {
		s.metrics.ConnectLimited()
		setRetryAfter(w, d)
		writeError(w, protocol.CodeRateLimited, "the agent connects faster than limits.connectrate; retry later")
		return
	}
	if !s.upgradeTurn(w, r) {
		return
	}
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{OriginPatterns: s.cfg.WS.Origins, Subprotocols: []string{SubprotocolBatch, Subprotocol}})
	if err != nil {
		s.log.Info("websocket upgrade failed", zap.String("remote", r.RemoteAddr), zap.Error(err))
		return
	}
	// From here on r.Context() is done: the connection is the library's.
	ws.SetReadLimit(s.cfg.WS.MaxMessage)
	c := newWSConn(ws, id.AgentID, r.RemoteAddr, &s.cfg.WS, s.cfg.Limits, s.metrics, s.log)
	c.userAgent = protocol.CutEncoded(strings.ToValidUTF8(r.UserAgent(), "\uFFFD"), protocol.MaxNameLength)
	if !s.track(c) {
		_ = ws.Close(websocket.StatusCode(protocol.CloseGoingAway), "broker shutting down")
		return
	}
	sess := s.openConn(c, id, expires, since)
	if sess == nil {
		s.closeConn(c, nil, id.Role)
		return
	}
	// The reader gets a goroutine of its own: the handler's, deep in
	// net/http's, would keep that stack for the connection's life.
	go s.runConn(c, sess, id.Role)
}

// upgradeTurn waits for the upgrade's turn under limits.upgradespercpu, and
// answers 503 when that turn is more than limits.upgradewait away. It comes
// after the token check, so that upgrades without a valid token cannot take
// the turns of agents reconnecting after a node failure. The pace keeps such
// a storm from crowding out the agents already on this node: thousands of
// handshakes at once grew the heap fast, and the collections on the way took
// those agents' CPU (docs/benchmarks.md, sixth round).
func (s *Server) upgradeTurn(w http.ResponseWriter, r *http.Request) bool {
	if s.upgrades == nil {
		return true
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.Limits.UpgradeWait)
	defer cancel()
	// At shutdown the waiting ends at once: the HTTP server's graceful
	// shutdown waits for handlers.
	defer context.AfterFunc(s.streams, cancel)()
	s.metrics.UpgradeWaiting(1)
	err := s.upgrades.Wait(ctx)
	s.metrics.UpgradeWaiting(-1)
	switch {
	case err == nil:
		return true
	case s.draining.Load():
		writeError(w, protocol.CodeUnavailable, "broker is shutting down")
	case r.Context().Err() == nil: // else the client went away while it waited
		s.metrics.UpgradeRefused()
		setRetryAfter(w, s.cfg.Limits.UpgradeWait)
		writeError(w, protocol.CodeUnavailable, "too many connections opening; retry later")
	}
	return false
}

// setRetryAfter tells a refused client when to come back: whole seconds
// (RFC 9110's delay-seconds), rounded up so that it does not come too soon.
func setRetryAfter(w http.ResponseWriter, d time.Duration) {
	w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(d.Seconds()))))
}

// runConn reads the connection until it ends.
func (s *Server) runConn(c *wsConn, sess *session.Session, role string) {
	c.read(sess)
	s.closeConn(c, sess, role)
}

// openConn attaches the connection to the agent's session; nil when it was
// refused (the connection is closed then).
func (s *Server) openConn(c *wsConn, id session.Identity, expires time.Time, since *uint64) *session.Session {
	s.metrics.Connection(id.Role, 1)
	actx, cancel := context.WithTimeout(s.base, s.cfg.Redis.LeaseTTL+2*s.cfg.Redis.Timeout+s.cfg.Adapter.Timeout)
	sess, err := s.manager.Attach(actx, id, c, since)
	cancel()
	if err != nil {
		code, reason := protocol.CloseTryAgainLater, "session unavailable: "+err.Error()
		switch {
		case errors.Is(err, session.ErrAlreadyConnected):
			code, reason = protocol.CloseAlreadyConnected, "the agent is already connected"
		case errors.Is(err, session.ErrMoved):
			var moved *session.MovedError
			errors.As(err, &moved)
			code, reason = protocol.CloseMoved, moved.URL
			if reason == "" || len(reason) > protocol.MaxCloseReason {
				reason = protocol.CutEncoded("node "+moved.Node, protocol.MaxCloseReason)
			}
		case errors.Is(err, session.ErrShuttingDown):
			code, reason = protocol.CloseGoingAway, "broker shutting down"
		}
		c.logf(zap.InfoLevel, "attach refused", zap.Error(err), zap.Int("close", int(code)))
		c.Close(code, reason) // the library reads the peer's close by itself
		return nil
	}
	if !expires.IsZero() {
		c.mu.Lock()
		c.expiry = time.AfterFunc(time.Until(expires), func() { c.Close(protocol.CloseUnauthorized, "token expired") })
		c.mu.Unlock()
	}
	c.logf(zap.InfoLevel, "connected", zap.String("session", sess.ID()))
	c.startPings()
	return sess
}

// closeConn finishes a connection whose reader has returned.
func (s *Server) closeConn(c *wsConn, sess *session.Session, role string) {
	if sess != nil {
		c.logf(zap.InfoLevel, "disconnected", zap.Int("close", int(c.closedBy.Load())))
		sess.Detach(c)
	}
	c.mu.Lock()
	closing := c.closing
	c.mu.Unlock()
	if !closing {
		c.abort()
	}
	// Otherwise a close was requested: the writer drains, closes and
	// returns by itself, bounded by the write timeout and the close
	// handshake.
	c.wait()
	s.metrics.Connection(role, -1)
	s.untrack(c)
}

func (s *Server) track(c *wsConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining.Load() {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(c *wsConn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError writes a REST error: {"error":{"code","message"}} with the
// code's HTTP status from the failure code table.
func writeError(w http.ResponseWriter, code protocol.FailureCode, msg string) {
	writeJSON(w, code.HTTPStatus(), map[string]any{"error": map[string]string{"code": string(code), "message": msg}})
}

// ListenAndServe listens on cfg.Listen and serves until ctx is cancelled.
func (s *Server) ListenAndServe(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", s.cfg.Listen, err)
	}
	return s.Serve(ctx, ln)
}
