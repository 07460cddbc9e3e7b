// Package remote is the broker's side of the adapter protocol
// (adapters/remote/v1): an adapters.Adapter that calls a CTI adapter
// process over gRPC (adapter.kind: remote). docs/adapters.md has the
// contract.
//
// One Connect stream per broker node carries the CTI link's state and the
// events of the agents this node registered; every other call is a unary
// RPC with the adapter.timeout deadline. While the stream is down, or the
// adapter says its link to the switch is down, calls fail at once with
// adapters.ErrLinkDown (CTI_LINK_DOWN) instead of waiting for a deadline;
// when it is back the broker is told (adapters.LinkChanged) and every
// session registers its agent again and takes the switch's state.
package remote

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/ctibroker/ctibroker/adapters"
	pb "github.com/ctibroker/ctibroker/adapters/remote/v1"
	"github.com/ctibroker/ctibroker/protocol"
)

// Config is adapter.remote.
type Config struct {
	// Addr is the adapter's host:port.
	Addr string `koanf:"addr"`
	TLS  struct {
		// Enabled: dial with TLS (the system roots, or CA).
		Enabled bool `koanf:"enabled"`
		// CA: a PEM file of the CAs that sign the adapter's certificate.
		CA string `koanf:"ca"`
		// Cert and Key: PEM files of this node's client certificate (mTLS).
		Cert string `koanf:"cert"`
		Key  string `koanf:"key"`
		// ServerName overrides the name checked in the adapter's
		// certificate.
		ServerName string `koanf:"servername"`
	} `koanf:"tls"`
	// EventBuffer holds events between the stream and the broker.
	EventBuffer int `koanf:"eventbuffer"`
}

// Reconnect backoff: from ReconnectMin, doubling to ReconnectMax.
const (
	ReconnectMin = 100 * time.Millisecond
	ReconnectMax = 2 * time.Second
)

func init() {
	adapters.Register("remote", adapters.Kind{
		Config: func() any { return &Config{} },
		Validate: func(cfg any, _ adapters.Env) error {
			c := cfg.(*Config)
			if c.Addr == "" {
				return errors.New("addr: required (the adapter's host:port)")
			}
			if (c.TLS.Cert == "") != (c.TLS.Key == "") {
				return errors.New("tls.cert and tls.key: both or neither")
			}
			return nil
		},
		New: func(cfg any, env adapters.Env) (adapters.Adapter, error) {
			a, err := Dial(*cfg.(*Config), env.Node)
			if err == nil {
				a.WaitLinked(env.Timeout) // a broker starting beside its adapter serves at once
			}
			return a, err
		},
	})
}

// Adapter is a remote adapter.
type Adapter struct {
	node   string
	conn   *grpc.ClientConn
	client pb.AdapterClient
	events chan adapters.Event

	// streamUp: the Connect stream is established; linkUp: the adapter
	// says its switch link is up. Calls go out only while both hold.
	streamUp, linkUp atomic.Bool
	// callControl and queues: the process's capabilities.
	callControl, queues atomic.Bool
	lastDown            atomic.Value // string: why, for errors
	view                atomic.Value // string: the last QueueView

	linked     chan struct{} // closed at the first Link message
	linkedOnce sync.Once

	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

var (
	_ adapters.Adapter       = (*Adapter)(nil)
	_ adapters.CallControl   = (*Adapter)(nil)
	_ adapters.QueueReporter = (*Adapter)(nil)
	_ adapters.Registrar     = (*Adapter)(nil)
	_ adapters.Capabilities  = (*Adapter)(nil)
	_ adapters.Directory     = (*Adapter)(nil)
)

// Dial connects to the adapter at cfg.Addr as broker node node. It does
// not wait for the adapter: until the stream is up, calls fail with
// adapters.ErrLinkDown.
func Dial(cfg Config, node string) (*Adapter, error) {
	creds := insecure.NewCredentials()
	if cfg.TLS.Enabled {
		tc := &tls.Config{ServerName: cfg.TLS.ServerName, MinVersion: tls.VersionTLS12}
		if cfg.TLS.CA != "" {
			pem, err := os.ReadFile(cfg.TLS.CA)
			if err != nil {
				return nil, fmt.Errorf("tls.ca: %w", err)
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return nil, errors.New("tls.ca: no PEM certificate in it")
			}
		}
		if cfg.TLS.Cert != "" {
			cert, err := tls.LoadX509KeyPair(cfg.TLS.Cert, cfg.TLS.Key)
			if err != nil {
				return nil, fmt.Errorf("tls.cert: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		creds = credentials.NewTLS(tc)
	}
	conn, err := grpc.NewClient(cfg.Addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, fmt.Errorf("addr %q: %w", cfg.Addr, err)
	}
	a := &Adapter{node: node, conn: conn, client: pb.NewAdapterClient(conn),
		events: make(chan adapters.Event, max(cfg.EventBuffer, 1)), stop: make(chan struct{}), linked: make(chan struct{})}
	a.lastDown.Store("the adapter has not answered yet")
	a.view.Store("")
	a.wg.Add(1)
	go a.run()
	return a, nil
}

// WaitLinked waits up to d for the adapter's first word on the CTI link;
// false if it did not come (calls fail with ErrLinkDown until it does).
func (a *Adapter) WaitLinked(d time.Duration) bool {
	select {
	case <-a.linked:
		return true
	case <-time.After(d):
		return false
	}
}

// run keeps the Connect stream up until Close.
func (a *Adapter) run() {
	defer a.wg.Done()
	defer close(a.events)
	wait := ReconnectMin
	for {
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			select {
			case <-a.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		served, err := a.serve(ctx)
		cancel()
		if a.streamUp.Swap(false) && a.linkUp.Load() {
			a.down("the adapter is unreachable: " + status.Convert(err).Message())
		}
		select {
		case <-a.stop:
			return
		default:
		}
		if served {
			wait = ReconnectMin
		}
		select {
		case <-time.After(wait):
		case <-a.stop:
			return
		}
		wait = min(2*wait, ReconnectMax)
	}
}

// serve runs one Connect stream; served reports whether it got as far as
// the adapter's first message.
func (a *Adapter) serve(ctx context.Context) (served bool, err error) {
	stream, err := a.client.Connect(ctx)
	if err != nil {
		return false, err
	}
	if err := stream.Send(&pb.NodeMessage{Kind: &pb.NodeMessage_Hello{Hello: &pb.Hello{Node: a.node, Version: pb.Version}}}); err != nil {
		return false, err
	}
	for {
		m, err := stream.Recv()
		if err != nil {
			return served, err
		}
		served = true
		switch k := m.GetKind().(type) {
		case *pb.AdapterMessage_Capabilities:
			a.callControl.Store(k.Capabilities.GetCallControl())
			a.queues.Store(k.Capabilities.GetQueues())
		case *pb.AdapterMessage_Link:
			wasUp := a.streamUp.Swap(true) && a.linkUp.Load()
			a.linkUp.Store(k.Link.GetUp())
			switch {
			case k.Link.GetUp() && !wasUp:
				a.emit(adapters.Event{Kind: adapters.LinkChanged})
			case !k.Link.GetUp() && wasUp:
				a.down("the switch link is down: " + k.Link.GetReason())
			case !k.Link.GetUp():
				a.lastDown.Store("the switch link is down: " + k.Link.GetReason())
			}
			a.linkedOnce.Do(func() { close(a.linked) })
		case *pb.AdapterMessage_Event:
			ev, err := pb.ToEvent(k.Event)
			if err != nil {
				continue // an adapter's bug; the agent resyncs when the link comes back
			}
			a.emit(ev)
		}
	}
}

func (a *Adapter) down(why string) {
	a.lastDown.Store(why)
	a.emit(adapters.Event{Kind: adapters.LinkChanged, Error: why})
}

// emit hands an event to the broker, waiting for room (the broker reads
// continuously); until Close.
func (a *Adapter) emit(ev adapters.Event) {
	select {
	case a.events <- ev:
	case <-a.stop:
	}
}

// ready fails fast while the stream or the switch link is down.
func (a *Adapter) ready() error {
	if a.streamUp.Load() && a.linkUp.Load() {
		return nil
	}
	return fmt.Errorf("%w (%s)", adapters.ErrLinkDown, a.lastDown.Load().(string))
}

// fromStatus turns a call's gRPC status into the errors the broker knows.
func fromStatus(err error) error {
	if err == nil {
		return nil
	}
	st := status.Convert(err)
	switch st.Code() {
	case codes.DeadlineExceeded:
		return fmt.Errorf("%w: %s", context.DeadlineExceeded, st.Message())
	case codes.Unavailable:
		return fmt.Errorf("%w (%s)", adapters.ErrLinkDown, st.Message())
	case codes.Unimplemented:
		return fmt.Errorf("%w: %s", adapters.ErrNotSupported, st.Message())
	case codes.Internal:
		return &adapters.InternalError{Context: st.Message()}
	}
	return errors.New(st.Message())
}

// call runs one unary call, failing fast while the link is down.
func call[T any](a *Adapter, f func() (T, error)) (T, error) {
	if err := a.ready(); err != nil {
		var zero T
		return zero, err
	}
	v, err := f()
	return v, fromStatus(err)
}

func (a *Adapter) Events() <-chan adapters.Event { return a.events }

func (a *Adapter) Close() error {
	a.once.Do(func() { close(a.stop) })
	a.wg.Wait()
	return a.conn.Close()
}

func (a *Adapter) register(ctx context.Context, agentID string) (*pb.RegisterAgentResponse, error) {
	return call(a, func() (*pb.RegisterAgentResponse, error) {
		return a.client.RegisterAgent(ctx, &pb.RegisterAgentRequest{AgentId: agentID, Node: a.node})
	})
}

// Register implements adapters.Registrar.
func (a *Adapter) Register(ctx context.Context, agentID string) error {
	_, err := a.register(ctx, agentID)
	return err
}

// Logins registers the agent with this node and returns its logins.
func (a *Adapter) Logins(ctx context.Context, agentID string) ([]adapters.Login, error) {
	r, err := a.register(ctx, agentID)
	if err != nil {
		return nil, err
	}
	out := make([]adapters.Login, 0, len(r.GetLogins()))
	for _, l := range r.GetLogins() {
		out = append(out, pb.ToLogin(l))
	}
	return out, nil
}

func (a *Adapter) Activate(ctx context.Context, ch adapters.ChannelRef, queues []string) error {
	_, err := call(a, func() (*pb.Empty, error) {
		return a.client.Activate(ctx, &pb.ActivateRequest{Channel: pb.FromRef(ch), Queues: queues})
	})
	return err
}

func (a *Adapter) Deactivate(ctx context.Context, ch adapters.ChannelRef, logoutReason string) error {
	_, err := call(a, func() (*pb.Empty, error) {
		return a.client.Deactivate(ctx, &pb.DeactivateRequest{Channel: pb.FromRef(ch), LogoutReason: logoutReason})
	})
	return err
}

func (a *Adapter) SetReady(ctx context.Context, ch adapters.ChannelRef) error {
	_, err := call(a, func() (*pb.Empty, error) { return a.client.SetReady(ctx, &pb.ChannelRequest{Channel: pb.FromRef(ch)}) })
	return err
}

func (a *Adapter) SetNotReady(ctx context.Context, ch adapters.ChannelRef, reasonCode string) error {
	_, err := call(a, func() (*pb.Empty, error) {
		return a.client.SetNotReady(ctx, &pb.NotReadyRequest{Channel: pb.FromRef(ch), ReasonCode: reasonCode})
	})
	return err
}

func (a *Adapter) Teams(ctx context.Context, agentID string) ([]string, error) {
	r, err := call(a, func() (*pb.TeamsResponse, error) { return a.client.Teams(ctx, &pb.AgentRequest{AgentId: agentID}) })
	return r.GetTeams(), err
}

// document reads one of an agent's documents into v.
func (a *Adapter) document(ctx context.Context, agentID string, kind pb.DocumentKind, v any) error {
	r, err := call(a, func() (*pb.DocumentResponse, error) {
		return a.client.Document(ctx, &pb.DocumentRequest{AgentId: agentID, Kind: kind})
	})
	if err != nil {
		return err
	}
	if err := json.Unmarshal(r.GetJson(), v); err != nil {
		return fmt.Errorf("the adapter's %v is not valid JSON: %w", kind, err)
	}
	return nil
}

func (a *Adapter) NotReadyReasons(ctx context.Context, agentID string) (out []protocol.ReasonCode, err error) {
	return out, a.document(ctx, agentID, pb.DocumentKind_DOCUMENT_KIND_NOT_READY_REASONS, &out)
}

func (a *Adapter) LogoutReasons(ctx context.Context, agentID string) (out []protocol.LogoutReason, err error) {
	return out, a.document(ctx, agentID, pb.DocumentKind_DOCUMENT_KIND_LOGOUT_REASONS, &out)
}

func (a *Adapter) AddressBook(ctx context.Context, agentID string) (out protocol.AddressBooks, err error) {
	return out, a.document(ctx, agentID, pb.DocumentKind_DOCUMENT_KIND_ADDRESS_BOOK, &out)
}

func (a *Adapter) Dispositions(ctx context.Context, agentID string) (out []protocol.Disposition, err error) {
	return out, a.document(ctx, agentID, pb.DocumentKind_DOCUMENT_KIND_DISPOSITIONS, &out)
}

// DisplayName implements adapters.Directory.
func (a *Adapter) DisplayName(ctx context.Context, agentID string) (out string, err error) {
	return out, a.document(ctx, agentID, pb.DocumentKind_DOCUMENT_KIND_DISPLAY_NAME, &out)
}

func (a *Adapter) Interactions(ctx context.Context, agentID string) (out []protocol.Interaction, err error) {
	return out, a.document(ctx, agentID, pb.DocumentKind_DOCUMENT_KIND_INTERACTIONS, &out)
}

func (a *Adapter) Dial(ctx context.Context, ch adapters.ChannelRef, destination string, data map[string]string) (string, error) {
	r, err := call(a, func() (*pb.DialResponse, error) {
		return a.client.Dial(ctx, &pb.DialRequest{Channel: pb.FromRef(ch), Destination: destination, Data: data})
	})
	return r.GetInteractionId(), err
}

// control runs one interaction action.
func (a *Adapter) control(ctx context.Context, req *pb.ControlRequest) (string, error) {
	r, err := call(a, func() (*pb.ControlResponse, error) { return a.client.Control(ctx, req) })
	return r.GetInteractionId(), err
}

func (a *Adapter) act(ctx context.Context, ch adapters.ChannelRef, id string, action pb.Action) error {
	_, err := a.control(ctx, &pb.ControlRequest{Channel: pb.FromRef(ch), InteractionId: id, Action: action})
	return err
}

func (a *Adapter) Accept(ctx context.Context, ch adapters.ChannelRef, id string) error {
	return a.act(ctx, ch, id, pb.Action_ACTION_ACCEPT)
}

func (a *Adapter) Reject(ctx context.Context, ch adapters.ChannelRef, id string) error {
	return a.act(ctx, ch, id, pb.Action_ACTION_REJECT)
}

func (a *Adapter) Hold(ctx context.Context, ch adapters.ChannelRef, id string) error {
	return a.act(ctx, ch, id, pb.Action_ACTION_HOLD)
}

func (a *Adapter) Retrieve(ctx context.Context, ch adapters.ChannelRef, id string) error {
	return a.act(ctx, ch, id, pb.Action_ACTION_RETRIEVE)
}

func (a *Adapter) Release(ctx context.Context, ch adapters.ChannelRef, id string) error {
	return a.act(ctx, ch, id, pb.Action_ACTION_RELEASE)
}

func (a *Adapter) ConsultTransfer(ctx context.Context, ch adapters.ChannelRef, id string) error {
	return a.act(ctx, ch, id, pb.Action_ACTION_CONSULT_TRANSFER)
}

func (a *Adapter) ConsultConference(ctx context.Context, ch adapters.ChannelRef, id string) error {
	return a.act(ctx, ch, id, pb.Action_ACTION_CONSULT_CONFERENCE)
}

func (a *Adapter) BlindTransfer(ctx context.Context, ch adapters.ChannelRef, id, destination string) error {
	_, err := a.control(ctx, &pb.ControlRequest{Channel: pb.FromRef(ch), InteractionId: id, Action: pb.Action_ACTION_BLIND_TRANSFER, Destination: destination})
	return err
}

func (a *Adapter) Consult(ctx context.Context, ch adapters.ChannelRef, id, destination string) (string, error) {
	return a.control(ctx, &pb.ControlRequest{Channel: pb.FromRef(ch), InteractionId: id, Action: pb.Action_ACTION_CONSULT, Destination: destination})
}

func (a *Adapter) SendDTMF(ctx context.Context, ch adapters.ChannelRef, id, digits string) error {
	_, err := a.control(ctx, &pb.ControlRequest{Channel: pb.FromRef(ch), InteractionId: id, Action: pb.Action_ACTION_SEND_DTMF, Digits: digits})
	return err
}

func (a *Adapter) SetData(ctx context.Context, ch adapters.ChannelRef, id string, data map[string]string) error {
	_, err := a.control(ctx, &pb.ControlRequest{Channel: pb.FromRef(ch), InteractionId: id, Action: pb.Action_ACTION_SET_DATA, Data: data})
	return err
}

func (a *Adapter) Complete(ctx context.Context, ch adapters.ChannelRef, id, disposition string) error {
	_, err := a.control(ctx, &pb.ControlRequest{Channel: pb.FromRef(ch), InteractionId: id, Action: pb.Action_ACTION_COMPLETE, Disposition: disposition})
	return err
}

// Queues implements adapters.QueueReporter.
func (a *Adapter) Queues(ctx context.Context) ([]protocol.QueueFigures, error) {
	r, err := call(a, func() (*pb.QueuesResponse, error) { return a.client.Queues(ctx, &pb.Empty{}) })
	if err != nil {
		return nil, err
	}
	var out []protocol.QueueFigures
	if err := json.Unmarshal(r.GetQueuesJson(), &out); err != nil {
		return nil, fmt.Errorf("the adapter's queue figures are not valid JSON: %w", err)
	}
	a.view.Store(r.GetView())
	return out, nil
}

// HasCallControl implements adapters.Capabilities.
func (a *Adapter) HasCallControl() bool { return a.callControl.Load() }

// HasQueues implements adapters.Capabilities.
func (a *Adapter) HasQueues() bool { return a.queues.Load() }

// QueueView is the view the adapter named with its last figures.
func (a *Adapter) QueueView() string { return a.view.Load().(string) }
