package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctibroker/ctibroker/protocol"
)

// Redis is the Redis store. Key layout (P = redis.prefix, documented in
// docs/redis.md); every key of a session shares the {sid} hash tag so that
// the commit script touches a single Cluster slot:
//
//	P agent:{agent}          string  the agent's live session id      TTL
//	P sess:{sid}             hash    v (version), c (its commit's id),  TTL
//	                                 snap, agent, ke/kt (the stream/
//	                                 timeline got their TTL)
//	P sess:{sid}:ev          stream  a commit's events per entry, ID   MAXLEN (entries), TTL
//	                                 "<its last seq>-0", fields "<seq>"
//	P sess:{sid}:tl          list    timeline entries                  LTRIM (+1/8), TTL
//	P sess:{sid}:lease       string  owner node id                     lease TTL
//	P sess:{sid}:req:<id>    string  reply to a requestId              reply TTL
//	P live                   set     live session ids                  members removed at End
//	P hist:{agent}           zset    the agent's sessions by creation  history retention
//	P node:{node}:alive      string  the node is alive                 redis.nodettl
//
// A session's timeline is kept for the history retention after it ended.
type Redis struct {
	c redis.UniversalClient
	// commit runs the commit script through go-redis's autopipeliner when
	// the client has one (closed with the client): the commits of many
	// sessions share one write and one read instead of a round trip each,
	// which cut the broker's CPU per command by a fifth at full load. Its
	// price: at moderate load it holds a batch a moment for the next
	// commands (p50 at 5,000 commands/s 0.3 -> 1.2 ms; docs/benchmarks.md).
	//
	// Up to protocol.RedisCommitBatches batches run at once, in no set
	// order: with one, Redis waited while the broker read a batch's replies
	// and the broker while Redis ran the next. Order does not matter: a
	// session has one commit in flight at a time (its goroutine waits for
	// it), and a commit retried after a timeout is fenced by its version,
	// whichever of the two Redis runs first.
	commit redis.Scripter
	prefix string
	limits Limits

	refreshMu     sync.Mutex
	keysRefreshed time.Time // the last renewal round that refreshed key TTLs
}

var _ Store = (*Redis)(nil)

// NewRedis creates a Redis store. Bus topics passed to Commit are published
// on prefix+topic, as the Redis bus subscribes to them.
func NewRedis(c redis.UniversalClient, prefix string, limits Limits) *Redis {
	r := &Redis{c: c, commit: c, prefix: prefix, limits: limits}
	if ap, ok := c.(interface {
		AutoPipelineWithOptions(*redis.AutoPipelineOptions) (*redis.AutoPipeliner, error)
	}); ok {
		o := redis.DefaultBlockingAutoPipelineOptions()
		o.Unordered, o.MaxConcurrentBatches = true, protocol.RedisCommitBatches
		if p, err := ap.AutoPipelineWithOptions(o); err == nil {
			r.commit = p
		}
	}
	return r
}

func (r *Redis) agentKey(agent string) string { return r.prefix + "agent:{" + agent + "}" }
func (r *Redis) histKey(agent string) string  { return r.prefix + "hist:{" + agent + "}" }
func (r *Redis) liveKey() string              { return r.prefix + "live" }
func (r *Redis) sessKey(sid string) string    { return r.prefix + "sess:{" + sid + "}" }
func (r *Redis) aliveKey(node string) string  { return r.prefix + "node:{" + node + "}:alive" }

// Durable implements Store.
func (r *Redis) Durable() bool { return true }

// Claim implements Store.
func (r *Redis) Claim(ctx context.Context, agentID, sid string) (string, error) {
	ok, err := r.c.SetNX(ctx, r.agentKey(agentID), sid, r.limits.TTL).Result()
	if err != nil {
		return "", fmt.Errorf("claim session of %s: %w", agentID, err)
	}
	if ok {
		now := time.Now()
		_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.SAdd(ctx, r.liveKey(), sid)
			p.ZAdd(ctx, r.histKey(agentID), redis.Z{Score: float64(now.UnixMilli()), Member: sid})
			p.ZRemRangeByScore(ctx, r.histKey(agentID), "-inf", strconv.FormatInt(now.Add(-r.limits.History).UnixMilli(), 10))
			p.ZRemRangeByRank(ctx, r.histKey(agentID), 0, -int64(max(r.limits.HistorySessions, 1))-1)
			p.PExpire(ctx, r.histKey(agentID), r.limits.History)
			return nil
		})
		if err != nil {
			return "", fmt.Errorf("claim session of %s: %w", agentID, err)
		}
		return sid, nil
	}
	cur, err := r.c.Get(ctx, r.agentKey(agentID)).Result()
	if errors.Is(err, redis.Nil) {
		// It expired in between: try once more.
		return r.Claim(ctx, agentID, sid)
	}
	if err != nil {
		return "", fmt.Errorf("claim session of %s: %w", agentID, err)
	}
	return cur, nil
}

// SessionOf implements Store.
func (r *Redis) SessionOf(ctx context.Context, agentID string) (string, error) {
	sid, err := r.c.Get(ctx, r.agentKey(agentID)).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("session of %s: %w", agentID, err)
	}
	return sid, nil
}

var acquireScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur == false or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
return cur`)

// stealScript takes the lease from ARGV[1] (a node found dead), if it
// still holds it.
var stealScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return ARGV[2]
end
return cur`)

// Acquire implements Store. The owner's liveness key is read apart from the
// lease (another Cluster slot), then the lease is taken only if that owner
// still holds it.
func (r *Redis) Acquire(ctx context.Context, sid, agentID, node string, ttl time.Duration) (string, error) {
	lease := r.sessKey(sid) + ":lease"
	owner, err := acquireScript.Run(ctx, r.c, []string{lease}, node, ttl.Milliseconds()).Text()
	if err != nil {
		return "", fmt.Errorf("acquire lease of %s: %w", sid, err)
	}
	if owner != node {
		alive, err := r.c.Exists(ctx, r.aliveKey(owner)).Result()
		if err != nil {
			return "", fmt.Errorf("liveness of node %s: %w", owner, err)
		}
		if alive == 0 {
			if owner, err = stealScript.Run(ctx, r.c, []string{lease}, owner, node, ttl.Milliseconds()).Text(); errors.Is(err, redis.Nil) {
				return r.Acquire(ctx, sid, agentID, node, ttl) // released meanwhile
			} else if err != nil {
				return "", fmt.Errorf("acquire lease of %s: %w", sid, err)
			}
		}
	}
	if owner == node {
		_ = r.c.PExpire(ctx, r.agentKey(agentID), r.limits.TTL).Err()
	}
	return owner, nil
}

// Owner implements Store.
func (r *Redis) Owner(ctx context.Context, sid string) (string, error) {
	owner, err := r.c.Get(ctx, r.sessKey(sid)+":lease").Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("owner of %s: %w", sid, err)
	}
	return owner, nil
}

// Heartbeat implements Store.
func (r *Redis) Heartbeat(ctx context.Context, node string, ttl time.Duration) error {
	if err := r.c.Set(ctx, r.aliveKey(node), "1", ttl).Err(); err != nil {
		return fmt.Errorf("heartbeat of %s: %w", node, err)
	}
	return nil
}

// renewScript extends a lease (re-taking it when it expired and is free).
// keysScript does too, and refreshes the TTLs of the session's keys (the
// timeline's to the history retention): commits leave that to renewals, and
// the TTLs are so much longer than a lease that one renewal round in
// keyRefreshes does it. Most rounds therefore cost Redis two commands per
// session instead of five (a 5,200-session node spent three quarters of its
// Redis script time renewing).
var renewScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur ~= false and cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1`)

var keysScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur ~= false and cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
redis.call('PEXPIRE', KEYS[4], ARGV[4])
return 1`)

// keyRefreshes is how many times per TTL (the shorter of the session TTL
// and the history retention) renewals refresh the keys' TTLs: a key is
// refreshed long before it could lapse, even when a round fails.
const keyRefreshes = 8

// Renew implements Store: pipelined, protocol.RenewBatch sessions per
// round trip (a pipeline holds Redis for the others meanwhile). One round
// per TTL/keyRefreshes also refreshes the TTLs of the sessions' keys and
// agent keys; a session whose node took it since the last such round has
// the TTLs its commits or the previous node gave its keys, which last far
// longer than that.
func (r *Redis) Renew(ctx context.Context, node string, ttl time.Duration, leases []Lease) ([]string, error) {
	r.refreshMu.Lock()
	keys := time.Since(r.keysRefreshed) >= min(r.limits.TTL, r.limits.History)/keyRefreshes
	r.refreshMu.Unlock()
	var lost []string
	for len(leases) > 0 {
		n := min(len(leases), protocol.RenewBatch)
		l, err := r.renew(ctx, node, ttl, leases[:n], keys)
		if err != nil {
			return lost, err
		}
		lost = append(lost, l...)
		leases = leases[n:]
	}
	if keys {
		r.refreshMu.Lock()
		r.keysRefreshed = time.Now()
		r.refreshMu.Unlock()
	}
	return lost, nil
}

func (r *Redis) renew(ctx context.Context, node string, ttl time.Duration, leases []Lease, keys bool) ([]string, error) {
	script := renewScript
	if keys {
		script = keysScript
	}
	run := func() ([]*redis.Cmd, error) {
		cmds := make([]*redis.Cmd, len(leases))
		_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, l := range leases {
				k := r.sessKey(l.SessionID)
				if !keys {
					cmds[i] = script.EvalSha(ctx, p, []string{k + ":lease"}, node, ttl.Milliseconds())
					continue
				}
				// One slot per script (Cluster); the agent key is another.
				cmds[i] = script.EvalSha(ctx, p, []string{k + ":lease", k, k + ":ev", k + ":tl"},
					node, ttl.Milliseconds(), r.limits.TTL.Milliseconds(), r.limits.History.Milliseconds())
				p.PExpire(ctx, r.agentKey(l.AgentID), r.limits.TTL)
			}
			return nil
		})
		return cmds, err
	}
	cmds, err := run()
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		// A restarted or failed-over Redis lost the script cache.
		if lerr := script.Load(ctx, r.c).Err(); lerr != nil {
			return nil, fmt.Errorf("renew leases: load script: %w", lerr)
		}
		cmds, err = run()
	}
	if err != nil {
		return nil, fmt.Errorf("renew %d leases: %w", len(leases), err)
	}
	var lost []string
	for i, c := range cmds {
		if ok, _ := c.Int(); ok == 0 {
			lost = append(lost, leases[i].SessionID)
		}
	}
	return lost, nil
}

var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)

// Release implements Store.
func (r *Redis) Release(ctx context.Context, sid, node string) error {
	if err := releaseScript.Run(ctx, r.c, []string{r.sessKey(sid) + ":lease"}, node).Err(); err != nil {
		return fmt.Errorf("release lease of %s: %w", sid, err)
	}
	return nil
}

// Load implements Store.
func (r *Redis) Load(ctx context.Context, sid string) (Record, bool, error) {
	m, err := r.c.HGetAll(ctx, r.sessKey(sid)).Result()
	if err != nil {
		return Record{}, false, fmt.Errorf("load %s: %w", sid, err)
	}
	if len(m) == 0 {
		return Record{}, false, nil
	}
	v, err := strconv.ParseUint(m["v"], 10, 64)
	if err != nil {
		return Record{}, false, fmt.Errorf("load %s: bad version %q", sid, m["v"])
	}
	return Record{SessionID: sid, AgentID: m["agent"], Version: v, LastCommit: m["c"], Snapshot: []byte(m["snap"])}, true, nil
}

// commitScript applies a Commit: fenced by the lease (re-taken when it
// expired and nobody else holds it) and the version, then snapshot, events
// (stream, and one bus message per topic for all of them), timeline and
// replies. It runs as few Redis commands as it can (each costs Redis CPU
// shared by every node): lease renewals refresh the TTLs of a live
// session's keys, so a commit sets one only on a key it may have created
// (the hash when new, the stream and timeline the first time, flagged in
// the hash as ke and kt), and the timeline is trimmed once it is an eighth
// over its bound rather than at every entry. ARGV layout is built by Commit.
var commitScript = redis.NewScript(`
local owner = redis.call('GET', KEYS[3])
if owner ~= false and owner ~= ARGV[1] then return redis.error_reply('NOTOWNER ' .. tostring(owner)) end
local h = redis.call('HMGET', KEYS[1], 'v', 'ke', 'kt')
local v = tonumber(h[1] or '0')
if v ~= tonumber(ARGV[2]) then return redis.error_reply('CONFLICT ' .. v) end
if owner == false then redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[13]) end
local ttl = ARGV[4]
local nE, nT, nL, nR = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local fields = {'v', v + 1, 'c', ARGV[15], 'agent', ARGV[7]}
if ARGV[3] ~= '' then fields[#fields + 1] = 'snap'; fields[#fields + 1] = ARGV[3] end
local newEv, newTl = nE > 0 and h[2] == false, nL > 0 and h[3] == false
if newEv then fields[#fields + 1] = 'ke'; fields[#fields + 1] = '1' end
if newTl then fields[#fields + 1] = 'kt'; fields[#fields + 1] = '1' end
redis.call('HSET', KEYS[1], unpack(fields))
if v == 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
local i = 18
if nE > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], ARGV[i + 2 * nE - 2] .. '-0', unpack(ARGV, i, i + 2 * nE - 1))
  i = i + 2 * nE
end
if newEv then redis.call('PEXPIRE', KEYS[2], ttl) end
for t = 1, nT do redis.call('PUBLISH', ARGV[i], ARGV[16]); i = i + 1 end
if nL > 0 then
  local n = redis.call('RPUSH', KEYS[4], unpack(ARGV, i, i + nL - 1))
  i = i + nL
  local max = tonumber(ARGV[6])
  if n > max + math.floor(max / 8) then redis.call('LTRIM', KEYS[4], -max, -1) end
  if newTl then redis.call('PEXPIRE', KEYS[4], ARGV[14]) end
end
for r = 1, nR do redis.call('SET', KEYS[4 + r], ARGV[i], 'PX', ARGV[12]); i = i + 1 end
local nO = tonumber(ARGV[17])
if nO > 0 then
  local ob = KEYS[5 + nR]
  for o = 0, nO - 1 do redis.call('XADD', ob, (v + 1) .. '-' .. o, 'd', ARGV[i]); i = i + 1 end
  redis.call('PEXPIRE', ob, ttl)
end
return v + 1`)

// Commit implements Store.
func (r *Redis) Commit(ctx context.Context, c Commit) error {
	k := r.sessKey(c.SessionID)
	keys := make([]string, 4, 4+len(c.Replies))
	keys[0], keys[1], keys[2], keys[3] = k, k+":ev", k+":lease", k+":tl"
	args := make([]any, 0, 16+2*len(c.Events)+len(c.Topics)+len(c.Timeline)+len(c.Replies))
	nT := 0
	if len(c.Events) > 0 {
		nT = len(c.Topics)
	}
	args = append(args, c.Node, c.Version, c.Snapshot, r.limits.TTL.Milliseconds(), r.limits.Events, r.limits.Timeline,
		c.AgentID, len(c.Events), nT, len(c.Timeline), len(c.Replies), r.limits.ReplyTTL.Milliseconds(),
		c.LeaseTTL.Milliseconds(), r.limits.History.Milliseconds(), c.ID, BusMessage(c.Events), len(c.Outbox))
	for _, e := range c.Events {
		args = append(args, e.Seq, e.Payload)
	}
	for _, t := range c.Topics[:nT] {
		args = append(args, r.prefix+t)
	}
	for _, t := range c.Timeline {
		args = append(args, t)
	}
	for _, rep := range c.Replies {
		keys = append(keys, k+":req:"+rep.RequestID)
		args = append(args, rep.Msg)
	}
	if len(c.Outbox) > 0 {
		keys = append(keys, k+":wh")
		for _, o := range c.Outbox {
			args = append(args, o)
		}
	}
	err := commitScript.Run(ctx, r.commit, keys, args...).Err()
	switch {
	case err == nil:
		return nil
	case strings.HasPrefix(err.Error(), "NOTOWNER"):
		return fmt.Errorf("commit %s: %w (%s)", c.SessionID, ErrNotOwner, err)
	case strings.HasPrefix(err.Error(), "CONFLICT"):
		return fmt.Errorf("commit %s: %w (%s)", c.SessionID, ErrConflict, err)
	}
	return fmt.Errorf("commit %s: %w", c.SessionID, err)
}

// EventsSince implements Store.
func (r *Redis) EventsSince(ctx context.Context, sid string, since, last uint64) ([][]byte, bool, error) {
	if since > last {
		return nil, false, nil
	}
	if since == last {
		return nil, true, nil
	}
	// An entry holds a commit's events and is named after its last: the
	// entries after since hold every event after it, and maybe a few
	// before, skipped here.
	msgs, err := r.c.XRangeN(ctx, r.sessKey(sid)+":ev", "("+strconv.FormatUint(since, 10)+"-0", strconv.FormatUint(last, 10)+"-0", int64(last-since)).Result()
	if err != nil {
		return nil, false, fmt.Errorf("events of %s: %w", sid, err)
	}
	out := make([][]byte, 0, last-since)
	next := since + 1
	for _, m := range msgs {
		for ; ; next++ {
			e, ok := m.Values[strconv.FormatUint(next, 10)].(string)
			if !ok {
				break
			}
			out = append(out, []byte(e))
		}
	}
	if uint64(len(out)) != last-since {
		return nil, false, nil // trimmed (or expired)
	}
	return out, true, nil
}

// LastSeq implements Store.
func (r *Redis) LastSeq(ctx context.Context, sid string) (uint64, error) {
	msgs, err := r.c.XRevRangeN(ctx, r.sessKey(sid)+":ev", "+", "-", 1).Result()
	if err != nil {
		return 0, fmt.Errorf("last seq of %s: %w", sid, err)
	}
	if len(msgs) == 0 {
		return 0, nil
	}
	ms, _, _ := strings.Cut(msgs[0].ID, "-")
	return strconv.ParseUint(ms, 10, 64)
}

// Timeline implements Store.
func (r *Redis) Timeline(ctx context.Context, sid string) ([][]byte, error) {
	// The list may hold up to an eighth more than the bound (see commitScript).
	items, err := r.c.LRange(ctx, r.sessKey(sid)+":tl", -int64(r.limits.Timeline), -1).Result()
	if err != nil {
		return nil, fmt.Errorf("timeline of %s: %w", sid, err)
	}
	out := make([][]byte, len(items))
	for i, it := range items {
		out[i] = []byte(it)
	}
	return out, nil
}

// Reply implements Store.
func (r *Redis) Reply(ctx context.Context, sid, requestID string) ([]byte, bool, error) {
	msg, err := r.c.Get(ctx, r.sessKey(sid)+":req:"+requestID).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("reply %s of %s: %w", requestID, sid, err)
	}
	return msg, true, nil
}

var endAgentScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)

// End implements Store. Remembered replies expire by themselves.
func (r *Redis) End(ctx context.Context, agentID, sid string) error {
	if err := endAgentScript.Run(ctx, r.c, []string{r.agentKey(agentID)}, sid).Err(); err != nil {
		return fmt.Errorf("end %s: %w", sid, err)
	}
	k := r.sessKey(sid)
	if err := r.c.Del(ctx, k, k+":ev", k+":lease").Err(); err != nil {
		return fmt.Errorf("end %s: %w", sid, err)
	}
	if err := r.c.SRem(ctx, r.liveKey(), sid).Err(); err != nil {
		return fmt.Errorf("end %s: %w", sid, err)
	}
	return nil
}

// LiveSessions implements Store. Sessions whose record expired (their owner
// died and nobody resumed them) are pruned from the live set on the way.
func (r *Redis) LiveSessions(ctx context.Context) ([]Record, error) {
	ids, err := r.c.SMembers(ctx, r.liveKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("live sessions: %w", err)
	}
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	_, err = r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, sid := range ids {
			cmds[i] = p.HGetAll(ctx, r.sessKey(sid))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("live sessions: %w", err)
	}
	out := make([]Record, 0, len(ids))
	for i, c := range cmds {
		m := c.Val()
		if len(m) == 0 {
			_ = r.c.SRem(ctx, r.liveKey(), ids[i]).Err()
			continue
		}
		v, _ := strconv.ParseUint(m["v"], 10, 64)
		out = append(out, Record{SessionID: ids[i], AgentID: m["agent"], Version: v, Snapshot: []byte(m["snap"])})
	}
	return out, nil
}

// Unowned implements Store: the live set's sessions without a lease key,
// protocol.RenewBatch per round trip (a pipeline holds Redis for the
// others meanwhile). A sweep, not a per-command call.
func (r *Redis) Unowned(ctx context.Context) ([]string, error) {
	ids, err := r.c.SMembers(ctx, r.liveKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("live sessions: %w", err)
	}
	var out []string
	for batch := range slices.Chunk(ids, protocol.RenewBatch) {
		cmds := make([]*redis.IntCmd, len(batch))
		if _, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, sid := range batch {
				cmds[i] = p.Exists(ctx, r.sessKey(sid)+":lease")
			}
			return nil
		}); err != nil {
			return nil, fmt.Errorf("leases of live sessions: %w", err)
		}
		for i, c := range cmds {
			if c.Val() == 0 {
				out = append(out, batch[i])
			}
		}
	}
	return out, nil
}

// HistoryAgents implements Store. It scans the hist: keys (on every master
// of a Cluster): a reporting call, not a per-command one.
func (r *Redis) HistoryAgents(ctx context.Context) ([]string, error) {
	var mu sync.Mutex
	seen := map[string]bool{}
	scan := func(ctx context.Context, c redis.Cmdable) error {
		it := c.Scan(ctx, 0, r.prefix+"hist:{*}", 1000).Iterator()
		for it.Next(ctx) {
			k := strings.TrimPrefix(it.Val(), r.prefix+"hist:{")
			agent := strings.TrimSuffix(k, "}")
			mu.Lock()
			seen[agent] = true
			mu.Unlock()
		}
		return it.Err()
	}
	var err error
	if cc, ok := r.c.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return scan(ctx, c) })
	} else {
		err = scan(ctx, r.c)
	}
	if err != nil {
		return nil, fmt.Errorf("history agents: %w", err)
	}
	out := make([]string, 0, len(seen))
	for a := range seen {
		out = append(out, a)
	}
	return out, nil
}

// AgentSessions implements Store.
func (r *Redis) AgentSessions(ctx context.Context, agentID string) ([]SessionRef, error) {
	zs, err := r.c.ZRangeByScoreWithScores(ctx, r.histKey(agentID), &redis.ZRangeBy{
		Min: strconv.FormatInt(time.Now().Add(-r.limits.History).UnixMilli(), 10), Max: "+inf"}).Result()
	if err != nil {
		return nil, fmt.Errorf("sessions of %s: %w", agentID, err)
	}
	out := make([]SessionRef, len(zs))
	for i, z := range zs {
		out[i] = SessionRef{SessionID: z.Member.(string), Created: time.UnixMilli(int64(z.Score))}
	}
	return out, nil
}

// Ping implements Store.
func (r *Redis) Ping(ctx context.Context) error { return r.c.Ping(ctx).Err() }

// Close implements Store.
func (r *Redis) Close() error { return nil }

// Outbox implements Store.
func (r *Redis) Outbox(ctx context.Context, sid string) ([]OutboxEntry, error) {
	msgs, err := r.c.XRange(ctx, r.sessKey(sid)+":wh", "-", "+").Result()
	if err != nil {
		return nil, fmt.Errorf("webhook outbox of %s: %w", sid, err)
	}
	out := make([]OutboxEntry, 0, len(msgs))
	for _, m := range msgs {
		d, _ := m.Values["d"].(string)
		out = append(out, OutboxEntry{ID: m.ID, Data: []byte(d)})
	}
	return out, nil
}

// AckOutbox implements Store.
func (r *Redis) AckOutbox(ctx context.Context, sid, id string) error {
	ms, seq, ok := strings.Cut(id, "-")
	n, err := strconv.ParseUint(seq, 10, 64)
	if !ok || err != nil {
		return fmt.Errorf("webhook outbox id %q", id)
	}
	// MINID drops the entries below it: the one after id.
	return r.c.XTrimMinID(ctx, r.sessKey(sid)+":wh", ms+"-"+strconv.FormatUint(n+1, 10)).Err()
}
