package session

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
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
		switch e.Kind {
		case history.KindStart:
			h.Teams, h.Created = e.Teams, time.UnixMilli(e.At)
		case history.KindTeams:
			h.Teams = e.Teams
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

// HistoryAgents lists the agents (not supervisors) with stored history.
func (m *Manager) HistoryAgents(ctx context.Context) ([]string, error) {
	sctx, cancel := context.WithTimeout(ctx, m.opts.StoreTimeout)
	defer cancel()
	keys, err := m.store.HistoryAgents(sctx)
	return slices.DeleteFunc(keys, func(k string) bool { return !isAgentKey(k) }), err
}

// SessionOwner returns the key of the agent (or supervisor) a session
// belongs to, from its live record or its stored timeline; "" when the
// session is unknown. An agent's key is its id.
func (m *Manager) SessionOwner(ctx context.Context, sid string) (string, error) {
	sctx, cancel := context.WithTimeout(ctx, m.opts.StoreTimeout)
	defer cancel()
	rec, ok, err := m.store.Load(sctx, sid)
	if err != nil {
		return "", fmt.Errorf("owner of %s: %w", sid, err)
	}
	if ok && rec.AgentID != "" {
		return rec.AgentID, nil
	}
	raw, err := m.store.Timeline(sctx, sid)
	if err != nil {
		return "", fmt.Errorf("owner of %s: %w", sid, err)
	}
	for _, e := range decodeEntries(raw) {
		if e.Kind == history.KindStart {
			return e.Agent, nil
		}
	}
	return "", nil
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

// Interactions returns a live session's interactions (in progress or
// awaiting wrap-up), oldest first: asked of the session when it runs on
// this node, else read from its stored snapshot (another node's).
func (m *Manager) Interactions(ctx context.Context, sid string) ([]protocol.Interaction, error) {
	m.mu.Lock()
	s := m.byID[sid]
	m.mu.Unlock()
	if s != nil {
		res := make(chan []protocol.Interaction, 1)
		if s.post(func(s *Session) {
			out := []protocol.Interaction{}
			for _, ix := range s.sortedInteractions() {
				out = append(out, ix.Info())
			}
			res <- out
		}) {
			select {
			case out := <-res:
				return out, nil
			case <-s.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}
	sctx, cancel := context.WithTimeout(ctx, m.opts.StoreTimeout)
	defer cancel()
	rec, ok, err := m.store.Load(sctx, sid)
	if err != nil {
		return nil, fmt.Errorf("interactions of %s: %w", sid, err)
	}
	var snap snapshot
	if !ok || json.Unmarshal(rec.Snapshot, &snap) != nil {
		return []protocol.Interaction{}, nil
	}
	return nonNil(snap.Interactions), nil
}
