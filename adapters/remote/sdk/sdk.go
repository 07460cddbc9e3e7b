// Package sdk serves the ctibroker adapter protocol (adapters/remote/v1)
// around an adapters.Adapter, so that an adapter written in Go is its
// switch code and a main of a few lines:
//
//	srv := sdk.New(myAdapter, logger)
//	lis, _ := net.Listen("tcp", ":7070")
//	go srv.Serve(lis)
//	... srv.SetLink(false, "switch unreachable") when the switch link drops ...
//
// The server keeps the protocol's promises for the adapter: an agent's
// events go only to the broker node that registered the agent last, events
// that name no agent go to every node, and each node learns the CTI link's
// state when it connects and whenever it changes. The adapter's calls run
// with the broker's deadline (the gRPC context). If the adapter also
// implements adapters.CallControl and adapters.QueueReporter, those calls
// are served too (otherwise they answer UNIMPLEMENTED).
package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ctibroker/ctibroker/adapters"
	pb "github.com/ctibroker/ctibroker/adapters/remote/v1"
)

// NodeBuffer is how many messages wait for one broker node's stream;
// beyond it the node is disconnected (it reconnects and re-registers its
// agents, which re-reads their state) rather than silently losing events.
const NodeBuffer = 4096

// HelloTimeout bounds the wait for a node's Hello.
const HelloTimeout = 10 * time.Second

// Server serves the protocol. Its zero value is not usable: call New.
type Server struct {
	pb.UnimplementedAdapterServer
	a    adapters.Adapter
	cc   adapters.CallControl
	qr   adapters.QueueReporter
	log  *zap.Logger
	grpc *grpc.Server

	mu     sync.Mutex
	nodes  map[string]*node  // by node id: the stream that said Hello last
	owners map[string]string // agent -> the node that registered it last
	link   *pb.Link
	pump   sync.Once
	done   chan struct{}
}

// node is one broker node's Connect stream.
type node struct {
	id   string
	out  chan *pb.AdapterMessage
	gone chan struct{} // closed when the node overflowed: the stream ends
	once sync.Once
}

func (n *node) drop() { n.once.Do(func() { close(n.gone) }) }

// New wraps an adapter. The link starts up. opts configure the gRPC
// server: TLS (grpc.Creds(credentials.NewTLS(...)), with
// tls.RequireAndVerifyClientCert for mutual TLS), limits.
func New(a adapters.Adapter, log *zap.Logger, opts ...grpc.ServerOption) *Server {
	s := &Server{a: a, log: log, nodes: map[string]*node{}, owners: map[string]string{}, link: &pb.Link{Up: true}, done: make(chan struct{})}
	s.cc, _ = a.(adapters.CallControl)
	s.qr, _ = a.(adapters.QueueReporter)
	// A panic in the adapter's code answers that call INTERNAL (the broker
	// says so to the desktop) instead of ending the process.
	recovered := recovery.WithRecoveryHandler(func(p any) error { return status.Errorf(codes.Internal, "%v", p) })
	s.grpc = grpc.NewServer(append([]grpc.ServerOption{grpc.ChainUnaryInterceptor(recovery.UnaryServerInterceptor(recovered)),
		grpc.ChainStreamInterceptor(recovery.StreamServerInterceptor(recovered))}, opts...)...)
	pb.RegisterAdapterServer(s.grpc, s)
	return s
}

// Serve serves the protocol on lis until Stop.
func (s *Server) Serve(lis net.Listener) error {
	s.pump.Do(func() { go s.forward() })
	return s.grpc.Serve(lis)
}

// Stop ends every stream and call and stops serving. Close the adapter
// afterwards: the event forwarder ends with its events channel.
func (s *Server) Stop() { s.grpc.Stop() }

// SetLink reports the CTI link's state to every node (and to those that
// connect later).
func (s *Server) SetLink(up bool, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.link = &pb.Link{Up: up, Reason: reason}
	for _, n := range s.nodes {
		s.sendLocked(n, &pb.AdapterMessage{Kind: &pb.AdapterMessage_Link{Link: s.link}})
	}
}

// forward routes the adapter's events until its channel closes.
func (s *Server) forward() {
	defer close(s.done)
	for ev := range s.a.Events() {
		msg, err := pb.FromEvent(ev)
		if err != nil {
			s.log.Warn("cannot encode a switch event", zap.String("event", string(ev.Kind)), zap.Error(err))
			continue
		}
		out := &pb.AdapterMessage{Kind: &pb.AdapterMessage_Event{Event: msg}}
		s.mu.Lock()
		if ev.AgentID == "" {
			for _, n := range s.nodes {
				s.sendLocked(n, out)
			}
		} else if n := s.nodes[s.owners[ev.AgentID]]; n != nil {
			s.sendLocked(n, out)
		} // an agent nobody registered: no node may hear of it (init before events)
		s.mu.Unlock()
	}
}

// sendLocked queues a message for a node without blocking; a node that
// cannot keep up is dropped.
func (s *Server) sendLocked(n *node, m *pb.AdapterMessage) {
	select {
	case n.out <- m:
	default:
		s.log.Warn("a broker node does not read its stream; disconnecting it", zap.String("node", n.id))
		n.drop()
	}
}

// Connect serves one broker node's stream.
func (s *Server) Connect(stream grpc.BidiStreamingServer[pb.NodeMessage, pb.AdapterMessage]) error {
	hello := make(chan *pb.Hello, 1)
	go func() {
		m, err := stream.Recv()
		if err == nil {
			hello <- m.GetHello()
		}
		close(hello)
		for err == nil { // a node says nothing more; read to see it go
			_, err = stream.Recv()
		}
	}()
	var h *pb.Hello
	select {
	case h = <-hello:
	case <-time.After(HelloTimeout):
	case <-stream.Context().Done():
		return nil
	}
	if h == nil || h.GetNode() == "" {
		return status.Error(codes.InvalidArgument, "the first message must be a Hello with the node's id")
	}
	if h.GetVersion() != pb.Version {
		return status.Errorf(codes.FailedPrecondition, "protocol version %d: this adapter speaks %d", h.GetVersion(), pb.Version)
	}
	n := &node{id: h.GetNode(), out: make(chan *pb.AdapterMessage, NodeBuffer), gone: make(chan struct{})}
	s.mu.Lock()
	if old := s.nodes[n.id]; old != nil {
		old.drop() // the node reconnected: its old stream is dead
	}
	s.nodes[n.id] = n
	n.out <- &pb.AdapterMessage{Kind: &pb.AdapterMessage_Capabilities{Capabilities: &pb.Capabilities{CallControl: s.cc != nil, Queues: s.qr != nil}}}
	n.out <- &pb.AdapterMessage{Kind: &pb.AdapterMessage_Link{Link: s.link}}
	s.mu.Unlock()
	s.log.Info("broker node connected", zap.String("node", n.id))
	defer func() {
		s.mu.Lock()
		if s.nodes[n.id] == n {
			delete(s.nodes, n.id)
		}
		s.mu.Unlock()
		s.log.Info("broker node disconnected", zap.String("node", n.id))
	}()
	for {
		select {
		case m := <-n.out:
			if err := stream.Send(m); err != nil {
				return err
			}
		case <-n.gone:
			return status.Error(codes.ResourceExhausted, "the node did not keep up with its events")
		case <-stream.Context().Done():
			return nil
		case <-s.done:
			return status.Error(codes.Unavailable, "the adapter is stopping")
		}
	}
}

// RegisterAgent records which node serves the agent and answers its state.
func (s *Server) RegisterAgent(ctx context.Context, r *pb.RegisterAgentRequest) (*pb.RegisterAgentResponse, error) {
	if r.GetAgentId() == "" || r.GetNode() == "" {
		return nil, status.Error(codes.InvalidArgument, "agent_id and node are required")
	}
	s.mu.Lock()
	s.owners[r.GetAgentId()] = r.GetNode()
	s.mu.Unlock()
	logins, err := s.a.Logins(ctx, r.GetAgentId())
	if err != nil {
		return nil, toStatus(err)
	}
	out := &pb.RegisterAgentResponse{}
	for _, l := range logins {
		out.Logins = append(out.Logins, pb.FromLogin(l))
	}
	if s.cc != nil {
		ixs, err := s.cc.Interactions(ctx, r.GetAgentId())
		if err != nil {
			return nil, toStatus(err)
		}
		if out.InteractionsJson, err = json.Marshal(ixs); err != nil {
			return nil, toStatus(err)
		}
	}
	return out, nil
}

func (s *Server) Activate(ctx context.Context, r *pb.ActivateRequest) (*pb.Empty, error) {
	return empty(s.a.Activate(ctx, pb.ToRef(r.GetChannel()), r.GetQueues()))
}

func (s *Server) Deactivate(ctx context.Context, r *pb.DeactivateRequest) (*pb.Empty, error) {
	return empty(s.a.Deactivate(ctx, pb.ToRef(r.GetChannel()), r.GetLogoutReason()))
}

func (s *Server) SetReady(ctx context.Context, r *pb.ChannelRequest) (*pb.Empty, error) {
	return empty(s.a.SetReady(ctx, pb.ToRef(r.GetChannel())))
}

func (s *Server) SetNotReady(ctx context.Context, r *pb.NotReadyRequest) (*pb.Empty, error) {
	return empty(s.a.SetNotReady(ctx, pb.ToRef(r.GetChannel()), r.GetReasonCode()))
}

func (s *Server) Teams(ctx context.Context, r *pb.AgentRequest) (*pb.TeamsResponse, error) {
	teams, err := s.a.Teams(ctx, r.GetAgentId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.TeamsResponse{Teams: teams}, nil
}

func (s *Server) Document(ctx context.Context, r *pb.DocumentRequest) (*pb.DocumentResponse, error) {
	var doc any
	var err error
	switch r.GetKind() {
	case pb.DocumentKind_DOCUMENT_KIND_NOT_READY_REASONS:
		doc, err = s.a.NotReadyReasons(ctx, r.GetAgentId())
	case pb.DocumentKind_DOCUMENT_KIND_LOGOUT_REASONS:
		doc, err = s.a.LogoutReasons(ctx, r.GetAgentId())
	case pb.DocumentKind_DOCUMENT_KIND_ADDRESS_BOOK:
		doc, err = s.a.AddressBook(ctx, r.GetAgentId())
	case pb.DocumentKind_DOCUMENT_KIND_DISPOSITIONS:
		if s.cc == nil {
			return nil, status.Error(codes.Unimplemented, "no call control")
		}
		doc, err = s.cc.Dispositions(ctx, r.GetAgentId())
	case pb.DocumentKind_DOCUMENT_KIND_DISPLAY_NAME:
		doc = ""
		if dir, ok := s.a.(adapters.Directory); ok {
			doc, err = dir.DisplayName(ctx, r.GetAgentId())
		}
	case pb.DocumentKind_DOCUMENT_KIND_INTERACTIONS:
		if s.cc == nil {
			return nil, status.Error(codes.Unimplemented, "no call control")
		}
		doc, err = s.cc.Interactions(ctx, r.GetAgentId())
	default:
		return nil, status.Errorf(codes.InvalidArgument, "unknown document kind %v", r.GetKind())
	}
	if err != nil {
		return nil, toStatus(err)
	}
	raw, err := json.Marshal(doc)
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.DocumentResponse{Json: raw}, nil
}

func (s *Server) Dial(ctx context.Context, r *pb.DialRequest) (*pb.DialResponse, error) {
	if s.cc == nil {
		return nil, status.Error(codes.Unimplemented, "no call control")
	}
	id, err := s.cc.Dial(ctx, pb.ToRef(r.GetChannel()), r.GetDestination(), r.GetData())
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.DialResponse{InteractionId: id}, nil
}

func (s *Server) Control(ctx context.Context, r *pb.ControlRequest) (*pb.ControlResponse, error) {
	if s.cc == nil {
		return nil, status.Error(codes.Unimplemented, "no call control")
	}
	ch, id := pb.ToRef(r.GetChannel()), r.GetInteractionId()
	var err error
	out := &pb.ControlResponse{}
	switch r.GetAction() {
	case pb.Action_ACTION_ACCEPT:
		err = s.cc.Accept(ctx, ch, id)
	case pb.Action_ACTION_REJECT:
		err = s.cc.Reject(ctx, ch, id)
	case pb.Action_ACTION_HOLD:
		err = s.cc.Hold(ctx, ch, id)
	case pb.Action_ACTION_RETRIEVE:
		err = s.cc.Retrieve(ctx, ch, id)
	case pb.Action_ACTION_RELEASE:
		err = s.cc.Release(ctx, ch, id)
	case pb.Action_ACTION_BLIND_TRANSFER:
		err = s.cc.BlindTransfer(ctx, ch, id, r.GetDestination())
	case pb.Action_ACTION_CONSULT:
		out.InteractionId, err = s.cc.Consult(ctx, ch, id, r.GetDestination())
	case pb.Action_ACTION_CONSULT_TRANSFER:
		err = s.cc.ConsultTransfer(ctx, ch, id)
	case pb.Action_ACTION_CONSULT_CONFERENCE:
		err = s.cc.ConsultConference(ctx, ch, id)
	case pb.Action_ACTION_SEND_DTMF:
		err = s.cc.SendDTMF(ctx, ch, id, r.GetDigits())
	case pb.Action_ACTION_SET_DATA:
		err = s.cc.SetData(ctx, ch, id, r.GetData())
	case pb.Action_ACTION_COMPLETE:
		err = s.cc.Complete(ctx, ch, id, r.GetDisposition())
	default:
		return nil, status.Errorf(codes.InvalidArgument, "unknown action %v", r.GetAction())
	}
	if err != nil {
		return nil, toStatus(err)
	}
	return out, nil
}

func (s *Server) Queues(ctx context.Context, _ *pb.Empty) (*pb.QueuesResponse, error) {
	if s.qr == nil {
		return nil, status.Error(codes.Unimplemented, "no queue figures")
	}
	qs, err := s.qr.Queues(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	raw, err := json.Marshal(qs)
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.QueuesResponse{View: s.qr.QueueView(), QueuesJson: raw}, nil
}

func empty(err error) (*pb.Empty, error) {
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.Empty{}, nil
}

// toStatus turns an adapter's error into a gRPC status: the deadline as
// DeadlineExceeded, anything else as Aborted with the error's text (the
// broker answers the desktop ADAPTER_ERROR with it).
func toStatus(err error) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, adapters.ErrLinkDown):
		return status.Error(codes.Unavailable, err.Error())
	}
	return status.Error(codes.Aborted, err.Error())
}
