package broker

import (
	"errors"
	"net/http"

	"github.com/ctibroker/ctibroker/protocol"
	"github.com/ctibroker/ctibroker/session"
	"github.com/ctibroker/ctibroker/webhook"
)

// The webhooks' REST routes: admins only (they show the receivers' URLs
// and the messages, and replay them).

func (s *Server) webhookAdmin(id session.Identity) (*webhook.Dispatcher, error) {
	if id.Role != RoleAdmin {
		return nil, &apiError{protocol.CodeForbidden, "webhooks are for admins"}
	}
	if s.webhooks == nil {
		return nil, &apiError{protocol.CodeNotFound, "no webhooks.endpoints are configured"}
	}
	return s.webhooks, nil
}

func webhookError(err error) error {
	if errors.Is(err, webhook.ErrNoEndpoint) {
		return &apiError{protocol.CodeNotFound, err.Error()}
	}
	return err
}

// GET /v1/webhooks: the endpoints with their health.
func (s *Server) listWebhooks(r *http.Request, id session.Identity) (any, error) {
	d, err := s.webhookAdmin(id)
	if err != nil {
		return nil, err
	}
	eps, err := d.Endpoints(r.Context())
	if err != nil {
		return nil, err
	}
	return page{List: eps, PageNum: 1, PageSize: len(eps), Total: len(eps)}, nil
}

// GET /v1/webhooks/{name}/deliveries?status=failed|dead&pageNum=&pageSize=
// failed: the messages being retried (as this node delivers them); dead:
// the dead letters.
func (s *Server) webhookDeliveries(r *http.Request, id session.Identity) (any, error) {
	d, err := s.webhookAdmin(id)
	if err != nil {
		return nil, err
	}
	num, size, err := paging(r.URL.Query())
	if err != nil {
		return nil, err
	}
	name := r.PathValue("name")
	switch st := r.URL.Query().Get("status"); st {
	case "failed", "":
		list, err := d.Failing(name)
		if err != nil {
			return nil, webhookError(err)
		}
		return paginate(list, num, size), nil
	case "dead":
		list, total, err := d.DeadLetters(r.Context(), name, (num-1)*size, size)
		if err != nil {
			return nil, webhookError(err)
		}
		return page{List: list, PageNum: num, PageSize: size, Total: total}, nil
	default:
		return nil, badParam("status", "failed or dead")
	}
}

// POST /v1/webhooks/{name}/replay: deliver the dead letters again (and
// enable an endpoint disabled by a 410).
func (s *Server) replayWebhook(r *http.Request, id session.Identity) (any, error) {
	d, err := s.webhookAdmin(id)
	if err != nil {
		return nil, err
	}
	n, err := d.Replay(r.Context(), r.PathValue("name"))
	if err != nil {
		if errors.Is(err, webhook.ErrNoEndpoint) {
			return nil, webhookError(err)
		}
		return nil, &apiError{protocol.CodeInvalidState, err.Error()}
	}
	return map[string]int{"replaying": n}, nil
}
