// Package check is the adapter protocol's conformance kit: it drives an
// adapter through the contract as a broker would (ctibroker adapter check)
// and reports one PASS, FAIL or SKIP line per check, for adapter authors'
// CI.
package check

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/ctibroker/ctibroker/adapters/remote/v1"
	"github.com/ctibroker/ctibroker/protocol"
)

// Options say what to drive.
type Options struct {
	// Agent is the agent the checks log in and out (it must be one the
	// adapter accepts; its switch state is changed).
	Agent string
	// Channel is the channel they use.
	Channel protocol.ChannelSpec
	// Destination is dialled by the interaction checks; it must answer.
	Destination string
	// Timeout bounds every call and every wait for an event.
	Timeout time.Duration
}

// Defaults fills what o leaves empty.
func (o Options) withDefaults() Options {
	if o.Agent == "" {
		o.Agent = "conformance"
	}
	if o.Channel.ID == "" {
		o.Channel = protocol.ChannelSpec{ID: "check", Name: "9999", Type: "TELEPHONY"}
	}
	if o.Destination == "" {
		o.Destination = "+15550199"
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	return o
}

// kit is one run's state.
type kit struct {
	o      Options
	client pb.AdapterClient
	ref    *pb.ChannelRef
	caps   *pb.Capabilities
	a, b   *stream // the two broker nodes the kit plays
	reason string  // a not-ready reason of the catalog
	logout string
	dispo  string
}

// stream is one node's Connect stream and the messages it received.
type stream struct {
	node   string
	cancel context.CancelFunc
	msgs   chan *pb.AdapterMessage
	err    chan error
}

// Run drives the adapter at addr and writes a line per check to w; it
// returns how many failed.
func Run(ctx context.Context, addr string, o Options, w io.Writer) int {
	o = o.withDefaults()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintf(w, "FAIL dial: %v\n", err)
		return 1
	}
	defer conn.Close()
	k := &kit{o: o, client: pb.NewAdapterClient(conn),
		ref: &pb.ChannelRef{AgentId: o.Agent, Channel: pb.FromSpec(o.Channel)}}
	defer k.closeStreams()
	failed := 0
	for _, c := range k.checks() {
		err := c.run(ctx)
		var skip skipped
		switch {
		case errors.As(err, &skip):
			fmt.Fprintf(w, "SKIP %s: %s\n", c.name, skip)
		case err != nil:
			failed++
			fmt.Fprintf(w, "FAIL %s: %v\n", c.name, err)
		default:
			fmt.Fprintf(w, "PASS %s\n", c.name)
		}
	}
	return failed
}

type skipped string

func (s skipped) Error() string { return string(s) }

type check struct {
	name string
	run  func(context.Context) error
}

func (k *kit) checks() []check {
	return []check{
		{"connect: a node's stream starts with the capabilities, then the link's state", k.connect},
		{"connect: an unknown protocol version is refused", k.badVersion},
		{"register: the agent's state (logins, interactions) in the answer", k.register},
		{"catalogs: not-ready and logout reasons", k.catalogs},
		{"teams", k.teams},
		{"activate", k.unary(func(ctx context.Context) error {
			_, err := k.client.Activate(ctx, &pb.ActivateRequest{Channel: k.ref})
			return err
		})},
		{"ready", k.unary(func(ctx context.Context) error {
			_, err := k.client.SetReady(ctx, &pb.ChannelRequest{Channel: k.ref})
			return err
		})},
		{"not ready with a reason of the catalog", k.unary(func(ctx context.Context) error {
			_, err := k.client.SetNotReady(ctx, &pb.NotReadyRequest{Channel: k.ref, ReasonCode: k.reason})
			return err
		})},
		{"deadline: a call answers by its deadline", k.deadline},
		{"interaction: dial, answered (an event), hold, retrieve, release, complete", k.interaction},
		{"events: only the node that registered the agent last gets its events", k.initBeforeEvents},
		{"reconnect: a node that reconnects and registers again gets the events", k.reconnect},
		{"unknown action refused", k.unknownAction},
		{"deactivate with a logout reason", k.unary(func(ctx context.Context) error {
			_, err := k.client.Deactivate(ctx, &pb.DeactivateRequest{Channel: k.ref, LogoutReason: k.logout})
			return err
		})},
		{"a logged-out channel cannot dial", k.dialLoggedOut},
	}
}

// unary runs f with the call deadline.
func (k *kit) unary(f func(context.Context) error) func(context.Context) error {
	return func(ctx context.Context) error {
		cctx, cancel := context.WithTimeout(ctx, k.o.Timeout)
		defer cancel()
		return f(cctx)
	}
}

// open starts a node's stream and says Hello.
func (k *kit) open(ctx context.Context, node string, version uint32) (*stream, error) {
	sctx, cancel := context.WithCancel(ctx)
	st, err := k.client.Connect(sctx)
	if err != nil {
		cancel()
		return nil, err
	}
	if err := st.Send(&pb.NodeMessage{Kind: &pb.NodeMessage_Hello{Hello: &pb.Hello{Node: node, Version: version}}}); err != nil {
		cancel()
		return nil, err
	}
	s := &stream{node: node, cancel: cancel, msgs: make(chan *pb.AdapterMessage, 1024), err: make(chan error, 1)}
	go func() {
		for {
			m, err := st.Recv()
			if err != nil {
				s.err <- err
				return
			}
			select {
			case s.msgs <- m:
			default: // the kit reads what it waits for; drop the rest
			}
		}
	}()
	return s, nil
}

func (k *kit) closeStreams() {
	for _, s := range []*stream{k.a, k.b} {
		if s != nil {
			s.cancel()
		}
	}
}

// next waits for a stream's next message.
func (k *kit) next(s *stream) (*pb.AdapterMessage, error) {
	select {
	case m := <-s.msgs:
		return m, nil
	case err := <-s.err:
		return nil, fmt.Errorf("the stream ended: %w", err)
	case <-time.After(k.o.Timeout):
		return nil, fmt.Errorf("nothing within %v", k.o.Timeout)
	}
}

func (k *kit) connect(ctx context.Context) error {
	s, err := k.open(ctx, "conformance-a", pb.Version)
	if err != nil {
		return err
	}
	k.a = s
	m, err := k.next(s)
	if err != nil {
		return err
	}
	if k.caps = m.GetCapabilities(); k.caps == nil {
		return fmt.Errorf("first message: %v, want capabilities", m)
	}
	if m, err = k.next(s); err != nil {
		return err
	}
	if l := m.GetLink(); l == nil || !l.GetUp() {
		return fmt.Errorf("second message: %v, want the link, up", m)
	}
	return nil
}

func (k *kit) badVersion(ctx context.Context) error {
	s, err := k.open(ctx, "conformance-v", pb.Version+98)
	if err != nil {
		return err
	}
	defer s.cancel()
	for {
		select {
		case <-s.msgs:
			// A message before the refusal is allowed; the stream must end.
		case err := <-s.err:
			if code := status.Code(err); code != codes.FailedPrecondition && code != codes.InvalidArgument {
				return fmt.Errorf("the stream ended with %v, want FailedPrecondition", err)
			}
			return nil
		case <-time.After(k.o.Timeout):
			return errors.New("the stream was not refused")
		}
	}
}

func (k *kit) register(ctx context.Context) error {
	return k.unary(func(ctx context.Context) error {
		r, err := k.client.RegisterAgent(ctx, &pb.RegisterAgentRequest{AgentId: k.o.Agent, Node: k.a.node})
		if err != nil {
			return err
		}
		if k.caps.GetCallControl() {
			var ixs []protocol.Interaction
			if err := json.Unmarshal(r.GetInteractionsJson(), &ixs); err != nil {
				return fmt.Errorf("interactions_json: %w", err)
			}
		}
		return nil
	})(ctx)
}

func (k *kit) document(ctx context.Context, kind pb.DocumentKind, v any) error {
	return k.unary(func(ctx context.Context) error {
		r, err := k.client.Document(ctx, &pb.DocumentRequest{AgentId: k.o.Agent, Kind: kind})
		if err != nil {
			return err
		}
		if err := json.Unmarshal(r.GetJson(), v); err != nil {
			return fmt.Errorf("%v: %w", kind, err)
		}
		return nil
	})(ctx)
}

func (k *kit) catalogs(ctx context.Context) error {
	var reasons []protocol.ReasonCode
	var logout []protocol.LogoutReason
	if err := k.document(ctx, pb.DocumentKind_DOCUMENT_KIND_NOT_READY_REASONS, &reasons); err != nil {
		return err
	}
	if err := k.document(ctx, pb.DocumentKind_DOCUMENT_KIND_LOGOUT_REASONS, &logout); err != nil {
		return err
	}
	if len(reasons) == 0 {
		return errors.New("no not-ready reason: agents could not go not ready")
	}
	for _, r := range reasons {
		if r.Code == "" {
			return fmt.Errorf("a not-ready reason without a code: %+v", r)
		}
		if k.reason == "" && r.Code != protocol.ReasonACW {
			k.reason = r.Code
		}
	}
	if len(logout) > 0 {
		k.logout = logout[0].Code
	}
	return nil
}

func (k *kit) teams(ctx context.Context) error {
	return k.unary(func(ctx context.Context) error {
		_, err := k.client.Teams(ctx, &pb.AgentRequest{AgentId: k.o.Agent})
		return err
	})(ctx)
}

func (k *kit) deadline(ctx context.Context) error {
	const d = 50 * time.Millisecond
	cctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	start := time.Now()
	_, err := k.client.SetReady(cctx, &pb.ChannelRequest{Channel: k.ref})
	if took := time.Since(start); took > d+time.Second {
		return fmt.Errorf("answered after %v with a %v deadline", took, d)
	}
	if err != nil && status.Code(err) != codes.DeadlineExceeded {
		return err
	}
	return nil
}

// dialAnswered dials and waits on s for the interaction's answer.
func (k *kit) dialAnswered(ctx context.Context, s *stream) (string, error) {
	var id string
	if err := k.unary(func(ctx context.Context) error {
		r, err := k.client.Dial(ctx, &pb.DialRequest{Channel: k.ref, Destination: k.o.Destination})
		id = r.GetInteractionId()
		return err
	})(ctx); err != nil {
		return "", fmt.Errorf("dial: %w", err)
	}
	if id == "" {
		return "", errors.New("dial answered no interaction id")
	}
	for {
		m, err := k.next(s)
		if err != nil {
			return id, fmt.Errorf("waiting for %s's answer on %s: %w", id, s.node, err)
		}
		ev := m.GetEvent()
		if ev == nil || ev.GetInteractionId() != id || ev.GetKind() != "interaction.change" {
			continue
		}
		var ix protocol.Interaction
		if err := json.Unmarshal(ev.GetInteractionJson(), &ix); err != nil {
			return id, fmt.Errorf("interaction_json: %w", err)
		}
		if ix.State == protocol.IxStarted {
			return id, nil
		}
	}
}

func (k *kit) control(ctx context.Context, id string, a pb.Action, disposition string) error {
	return k.unary(func(ctx context.Context) error {
		_, err := k.client.Control(ctx, &pb.ControlRequest{Channel: k.ref, InteractionId: id, Action: a, Disposition: disposition})
		if err != nil {
			return fmt.Errorf("%v: %w", a, err)
		}
		return nil
	})(ctx)
}

func (k *kit) interaction(ctx context.Context) error {
	if !k.caps.GetCallControl() {
		return skipped("the adapter has no call control")
	}
	var dispositions []protocol.Disposition
	if err := k.document(ctx, pb.DocumentKind_DOCUMENT_KIND_DISPOSITIONS, &dispositions); err != nil {
		return err
	}
	if len(dispositions) > 0 {
		k.dispo = dispositions[0].Code
	}
	id, err := k.dialAnswered(ctx, k.a)
	if err != nil {
		return err
	}
	for _, a := range []pb.Action{pb.Action_ACTION_HOLD, pb.Action_ACTION_RETRIEVE, pb.Action_ACTION_RELEASE} {
		if err := k.control(ctx, id, a, ""); err != nil {
			return err
		}
	}
	return k.control(ctx, id, pb.Action_ACTION_COMPLETE, k.dispo)
}

// release ends an interaction the kit made, best effort.
func (k *kit) release(ctx context.Context, id string) {
	_ = k.control(ctx, id, pb.Action_ACTION_RELEASE, "")
}

func (k *kit) initBeforeEvents(ctx context.Context) error {
	if !k.caps.GetCallControl() {
		return skipped("without call control the kit cannot make the switch send an event")
	}
	s, err := k.open(ctx, "conformance-b", pb.Version)
	if err != nil {
		return err
	}
	k.b = s
	if _, err := k.next(s); err != nil { // capabilities
		return err
	}
	if _, err := k.next(s); err != nil { // link
		return err
	}
	if err := k.unary(func(ctx context.Context) error {
		_, err := k.client.RegisterAgent(ctx, &pb.RegisterAgentRequest{AgentId: k.o.Agent, Node: s.node})
		return err
	})(ctx); err != nil {
		return err
	}
	drain(k.a)
	id, err := k.dialAnswered(ctx, k.b)
	if err != nil {
		return err
	}
	defer k.release(ctx, id)
	// An event sent to the wrong node would have gone with the right one's.
	settle := time.After(200 * time.Millisecond)
	for {
		select {
		case m := <-k.a.msgs:
			if ev := m.GetEvent(); ev != nil && ev.GetAgentId() == k.o.Agent {
				return fmt.Errorf("%s, which no longer serves the agent, got its event %s", k.a.node, ev.GetKind())
			}
		case <-settle:
			return nil
		}
	}
}

func (k *kit) reconnect(ctx context.Context) error {
	if k.b == nil {
		return skipped("needs the previous check")
	}
	k.b.cancel()
	s, err := k.open(ctx, "conformance-b", pb.Version)
	if err != nil {
		return err
	}
	k.b = s
	if err := k.unary(func(ctx context.Context) error {
		_, err := k.client.RegisterAgent(ctx, &pb.RegisterAgentRequest{AgentId: k.o.Agent, Node: s.node})
		return err
	})(ctx); err != nil {
		return err
	}
	id, err := k.dialAnswered(ctx, s)
	if err != nil {
		return err
	}
	k.release(ctx, id)
	return nil
}

func (k *kit) unknownAction(ctx context.Context) error {
	if !k.caps.GetCallControl() {
		return skipped("the adapter has no call control")
	}
	err := k.control(ctx, "none", pb.Action(999), "")
	if status.Code(errors.Unwrap(err)) != codes.InvalidArgument {
		return fmt.Errorf("got %v, want InvalidArgument", err)
	}
	return nil
}

func (k *kit) dialLoggedOut(ctx context.Context) error {
	if !k.caps.GetCallControl() {
		return skipped("the adapter has no call control")
	}
	err := k.unary(func(ctx context.Context) error {
		_, err := k.client.Dial(ctx, &pb.DialRequest{Channel: k.ref, Destination: k.o.Destination})
		return err
	})(ctx)
	if err == nil {
		return errors.New("the dial was accepted")
	}
	return nil
}

func drain(s *stream) {
	for {
		select {
		case <-s.msgs:
		default:
			return
		}
	}
}
