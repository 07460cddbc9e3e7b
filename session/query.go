package session

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/ctibroker/ctibroker/history"
	"github.com/ctibroker/ctibroker/protocol"
)

// AgentView returns a live agent's view, nil when it has no live session.
func (m *Manager) AgentView(ctx context.Context, agent string) (*protocol.AgentView, error) {
	views, err := m.board.snapshot(ctx, func(v *protocol.AgentView) bool { return v.AgentID == agent })
	if err != nil || len(views) == 0 {
		return nil, err
	}
	return &views[0], nil
}

// SessionHistory is a session's stored timeline and what is known of it.
type SessionHistory struct {
	SessionID string
	AgentID   string
	Teams     []string
	Created   time.Time
	// View is the live state; nil once the session ended.
	View    *protocol.AgentView
	Entries []history.Entry
}

// Session returns a session's history (live or ended within the history
// retention); false when it is unknown.
func (m *Manager) Session(ctx context.Context, sid string) (SessionHistory, bool, error) {
	sctx, cancel := context.WithTimeout(ctx, m.opts.StoreTimeout)
	defer cancel()
	raw, err := m.store.Timeline(sctx, sid)
	if err != nil {
		return SessionHistory{}, false, fmt.Errorf("timeline of %s: %w", sid, err)
	}
	entries := decodeEntries(raw)
	if len(entries) == 0 {
		return SessionHistory{}, false, nil
	}
	h := SessionHistory{SessionID: sid, AgentID: entries[0].Agent, Entries: entries, Created: time.UnixMilli(entries[0].At)}
	for _, e := range entries {
		if e.Kind == history.KindStart {
			h.Teams, h.Created = e.Teams, time.UnixMilli(e.At)
		}
	}
	if v, err := m.AgentView(ctx, h.AgentID); err == nil && v != nil && v.SessionID == sid {
		h.View = v
	}
	return h, true, nil
}

// AgentHistory returns the stored sessions of an agent within the history
// retention, oldest first.
func (m *Manager) AgentHistory(ctx context.Context, agent string) ([]SessionHistory, error) {
	sctx, cancel := context.WithTimeout(ctx, m.opts.StoreTimeout)
	refs, err := m.store.AgentSessions(sctx, agent)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("sessions of %s: %w", agent, err)
	}
	var out []SessionHistory
	for _, r := range refs {
		h, ok, err := m.Session(ctx, r.SessionID)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, h)
		}
	}
	return out, nil
}

// HistoryAgents lists the agents with stored history.
func (m *Manager) HistoryAgents(ctx context.Context) ([]string, error) {
	sctx, cancel := context.WithTimeout(ctx, m.opts.StoreTimeout)
	defer cancel()
	return m.store.HistoryAgents(sctx)
}

func decodeEntries(raw [][]byte) []history.Entry {
	out := make([]history.Entry, 0, len(raw))
	for _, r := range raw {
		var e history.Entry
		if json.Unmarshal(r, &e) == nil {
			out = append(out, e)
		}
	}
	return out
}
