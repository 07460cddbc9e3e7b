package sim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"sync/atomic"

	"github.com/ctibroker/ctibroker/adapters"
	"github.com/ctibroker/ctibroker/protocol"
)

// ControlRequest is the body of POST /v1/sim/events.
type ControlRequest struct {
	Event       string                `json:"event"`
	Agent       string                `json:"agent"`
	Channel     string                `json:"channel"`
	Interaction string                `json:"interaction"`
	State       string                `json:"state"`
	Status      string                `json:"status"`
	Reason      string                `json:"reason"`
	Error       string                `json:"error"`
	Endpoint    adapters.Endpoint     `json:"endpoint"`
	Holder      string                `json:"holder"`
	Fault       string                `json:"fault"`
	Count       int                   `json:"count"`
	ReasonCodes []protocol.ReasonCode `json:"reasonCodes"`
	Data        map[string]string     `json:"data"`
}

var interactionSeq atomic.Uint64

// ControlHandler serves POST /v1/sim/events:
//
//	{"event":"interaction.start","agent":"a","channel":"c","interaction":"i"?}
//	{"event":"interaction.answer","agent":"a","channel":"c","interaction":"i"}
//	{"event":"interaction.end","agent":"a","channel":"c","interaction":"i"}
//	{"event":"interaction.change","agent":"a","channel":"c","interaction":"i"}   (the far end answered)
//	{"event":"interaction.data","agent":"a","channel":"c","interaction":"i","data":{"k":"v"}}
//	{"event":"agentleg.failed","agent":"a","error":"no answer"}
//	{"event":"status.forced","agent":"a","channel":"c","state":"ACTIVE","status":"ready","reason":""}
//	{"event":"endpoint.taken"|"endpoint.freed","endpoint":{"type":"TELEPHONY","name":"1001"},"holder":"deskphone"}
//	{"event":"catalog.changed","reasonCodes":[...]}
//	{"event":"addressbook.changed"}
//	{"event":"fault","agent":"a","fault":"error"|"timeout"|"panic","count":1}
//
// POST /v1/sim/calls {"queue","from","to"?,"mediaType"?,"data"?} puts a call
// in a queue of the ACD: 202 {"interaction":id}, 404 for an unknown queue.
// POST /v1/sim/interactions/{id} {"event":"hangup"|"abandon"} acts as the
// far party: 202 {}, 404 for an unknown interaction, 409 to abandon an
// answered one.
//
// It answers 202 with {"interaction":id} for interaction.start, 202 {} for the
// others, 400 for a bad request, 409 when the switch state does not allow it,
// 413 for a body over protocol.MaxControlBody and 415 for a body that is not
// application/json: a browser cannot send JSON to another origin without a
// CORS preflight, which the broker never grants, so no web page can drive
// the switch through a visitor's browser. Who may call it is the caller's
// business (the broker requires an admin token in jwt mode).
func (s *Switch) ControlHandler() http.Handler {
	if s.cfg.Control != nil && !*s.cfg.Control {
		return nil
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/sim/events", func(w http.ResponseWriter, r *http.Request) {
		var req ControlRequest
		if !decodeControl(w, r, &req) {
			return
		}
		code, resp, err := s.control(req)
		answer(w, code, resp, err)
	})
	mux.HandleFunc("POST /v1/sim/calls", func(w http.ResponseWriter, r *http.Request) {
		var req CallRequest
		if !decodeControl(w, r, &req) {
			return
		}
		id, err := s.AddCall(req)
		code := protocol.CodeInvalidRequest
		if errors.Is(err, ErrNoDestination) {
			code = protocol.CodeNotFound
		}
		answer(w, code, map[string]string{"interaction": id}, err)
	})
	mux.HandleFunc("POST /v1/sim/interactions/{id}", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Event string `json:"event"`
		}
		if !decodeControl(w, r, &req) {
			return
		}
		err := s.FarParty(r.PathValue("id"), req.Event)
		code := protocol.CodeInvalidRequest
		switch {
		case errors.Is(err, ErrNoInteraction):
			code = protocol.CodeNotFound
		case errors.Is(err, errConflict):
			code = protocol.CodeInvalidState
		}
		answer(w, code, map[string]string{}, err)
	})
	return mux
}

// decodeControl reads a control body: application/json only, at most
// protocol.MaxControlBody bytes. It answers the error itself.
func decodeControl(w http.ResponseWriter, r *http.Request, v any) bool {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		controlError(w, protocol.CodeUnsupported, "the body must be application/json")
		return false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, protocol.MaxControlBody))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		controlError(w, protocol.CodeTooLarge, fmt.Sprintf("the body is larger than %d bytes", protocol.MaxControlBody))
		return false
	}
	if err == nil {
		err = json.Unmarshal(body, v)
	}
	if err != nil {
		controlError(w, protocol.CodeInvalidRequest, fmt.Sprintf("invalid body: %v", err))
		return false
	}
	return true
}

func answer(w http.ResponseWriter, code protocol.FailureCode, resp map[string]string, err error) {
	if err != nil {
		controlError(w, code, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_ = json.NewEncoder(w).Encode(resp)
}

func (s *Switch) control(req ControlRequest) (protocol.FailureCode, map[string]string, error) {
	need := func(fields ...string) error {
		for i := 0; i < len(fields); i += 2 {
			if fields[i+1] == "" {
				return fmt.Errorf("field %q is required for %s", fields[i], req.Event)
			}
		}
		return nil
	}
	ev := adapters.Event{Kind: adapters.EventKind(req.Event), AgentID: req.Agent, ChannelID: req.Channel,
		InteractionID: req.Interaction, State: req.State, Status: req.Status, ReasonCode: req.Reason,
		Endpoint: req.Endpoint, Holder: req.Holder, Error: req.Error}
	var err error
	switch ev.Kind {
	case adapters.InteractionStarted:
		err = need("agent", req.Agent, "channel", req.Channel)
		if ev.InteractionID == "" {
			ev.InteractionID = "sim-" + strconv.FormatUint(interactionSeq.Add(1), 10)
		}
	case adapters.InteractionEnded, adapters.InteractionAnswered, adapters.InteractionChanged:
		err = need("agent", req.Agent, "channel", req.Channel, "interaction", req.Interaction)
	case adapters.InteractionDataChanged:
		err = need("agent", req.Agent, "channel", req.Channel, "interaction", req.Interaction)
		if err == nil {
			err = protocol.ValidateData(req.Data)
		}
		ev.Data = req.Data
	case adapters.AgentLegFailed:
		err = need("agent", req.Agent, "error", req.Error)
	case adapters.StatusForced:
		err = need("agent", req.Agent, "channel", req.Channel, "state", req.State)
	case adapters.EndpointTaken, adapters.EndpointFreed:
		err = need("endpoint.type", req.Endpoint.Type, "endpoint.name", req.Endpoint.Name)
		if ev.Holder == "" {
			ev.Holder = "switch"
		}
	case adapters.CatalogChanged:
		if req.ReasonCodes != nil {
			if err := s.SetNotReadyReasons(req.ReasonCodes); err != nil {
				return protocol.CodeUnavailable, nil, err
			}
			return "", map[string]string{}, nil
		}
	case adapters.AddressBookChanged:
	case "fault":
		if err := need("agent", req.Agent, "fault", req.Fault); err != nil {
			return protocol.CodeInvalidRequest, nil, err
		}
		if req.Count == 0 {
			req.Count = 1
		}
		if err := s.InjectFault(req.Agent, req.Fault, req.Count); err != nil {
			return protocol.CodeInvalidRequest, nil, err
		}
		return "", map[string]string{}, nil
	default:
		err = fmt.Errorf("unknown event %q", req.Event)
	}
	if err != nil {
		return protocol.CodeInvalidRequest, nil, err
	}
	if err := s.Emit(ev); err != nil {
		code := protocol.CodeInvalidState
		if err == ErrBusy {
			code = protocol.CodeUnavailable
		}
		return code, nil, err
	}
	if ev.Kind == adapters.InteractionStarted {
		return "", map[string]string{"interaction": ev.InteractionID}, nil
	}
	return "", map[string]string{}, nil
}

func controlError(w http.ResponseWriter, code protocol.FailureCode, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code.HTTPStatus())
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": string(code), "message": msg}})
}
