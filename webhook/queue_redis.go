package webhook

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctibroker/ctibroker/protocol"
)

// RedisQueue keeps the outbox in Redis streams (one per partition), the
// cursors and leases in keys, dead letters in a stream per endpoint: every
// node sees them, and they outlive any node.
type RedisQueue struct {
	c      redis.UniversalClient
	prefix string
}

func NewRedisQueue(c redis.UniversalClient, prefix string) *RedisQueue {
	return &RedisQueue{c: c, prefix: prefix}
}

func (q *RedisQueue) part(p int) string     { return q.prefix + "wh:p:" + strconv.Itoa(p) }
func (q *RedisQueue) dead(ep string) string { return q.prefix + "wh:dead:" + ep }
func (q *RedisQueue) off(ep string) string  { return q.prefix + "wh:off:" + ep }
func (q *RedisQueue) lease(p int) string    { return q.prefix + "wh:lease:" + strconv.Itoa(p) }
func (q *RedisQueue) cur(ep string, p int) string {
	return q.prefix + "wh:c:" + ep + ":" + strconv.Itoa(p)
}

func (q *RedisQueue) Append(ctx context.Context, p int, data [][]byte) error {
	_, err := q.c.Pipelined(ctx, func(pl redis.Pipeliner) error {
		for _, d := range data {
			pl.XAdd(ctx, &redis.XAddArgs{Stream: q.part(p), MaxLen: protocol.WebhookOutboxMax, Approx: true, Values: []any{"d", d}})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("webhook outbox %d: %w", p, err)
	}
	return nil
}

func (q *RedisQueue) Read(ctx context.Context, p int, after string, n int) ([]Entry, error) {
	start := "-"
	if after != "" {
		start = "(" + after
	}
	msgs, err := q.c.XRangeN(ctx, q.part(p), start, "+", int64(n)).Result()
	if err != nil {
		return nil, fmt.Errorf("webhook outbox %d: %w", p, err)
	}
	out := make([]Entry, 0, len(msgs))
	for _, m := range msgs {
		d, _ := m.Values["d"].(string)
		out = append(out, Entry{ID: m.ID, Data: []byte(d)})
	}
	return out, nil
}

func (q *RedisQueue) Trim(ctx context.Context, p int, upTo string) error {
	return q.c.XTrimMinIDApprox(ctx, q.part(p), upTo, 0).Err()
}

func (q *RedisQueue) Cursor(ctx context.Context, endpoint string, p int) (string, error) {
	v, err := q.c.Get(ctx, q.cur(endpoint, p)).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	return v, err
}

func (q *RedisQueue) SetCursor(ctx context.Context, endpoint string, p int, id string) error {
	return q.c.Set(ctx, q.cur(endpoint, p), id, 0).Err()
}

var leaseScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur == false or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0`)

func (q *RedisQueue) Lease(ctx context.Context, p int, node string, ttl time.Duration) (bool, error) {
	n, err := leaseScript.Run(ctx, q.c, []string{q.lease(p)}, node, ttl.Milliseconds()).Int()
	return n == 1, err
}

func (q *RedisQueue) DeadLetter(ctx context.Context, endpoint string, d Dead) error {
	return q.c.XAdd(ctx, &redis.XAddArgs{Stream: q.dead(endpoint), MaxLen: protocol.WebhookDeadMax, Approx: true,
		Values: []any{"id", d.ID, "d", d.Data, "r", d.Reason, "at", d.At.UnixMilli()}}).Err()
}

func toDead(m redis.XMessage) Dead {
	id, _ := m.Values["id"].(string)
	data, _ := m.Values["d"].(string)
	reason, _ := m.Values["r"].(string)
	at, _ := m.Values["at"].(string)
	ms, _ := strconv.ParseInt(at, 10, 64)
	return Dead{Entry: Entry{ID: id, Data: []byte(data)}, Reason: reason, At: time.UnixMilli(ms)}
}

func (q *RedisQueue) Dead(ctx context.Context, endpoint string, offset, n int) ([]Dead, int, error) {
	total, err := q.c.XLen(ctx, q.dead(endpoint)).Result()
	if err != nil {
		return nil, 0, err
	}
	msgs, err := q.c.XRangeN(ctx, q.dead(endpoint), "-", "+", int64(offset+n)).Result()
	if err != nil {
		return nil, 0, err
	}
	var out []Dead
	for i := offset; i < len(msgs); i++ {
		out = append(out, toDead(msgs[i]))
	}
	return out, int(total), nil
}

func (q *RedisQueue) TakeDead(ctx context.Context, endpoint string) ([]Dead, error) {
	var rng *redis.XMessageSliceCmd
	_, err := q.c.TxPipelined(ctx, func(pl redis.Pipeliner) error {
		rng = pl.XRange(ctx, q.dead(endpoint), "-", "+")
		pl.Del(ctx, q.dead(endpoint))
		return nil
	})
	if err != nil {
		return nil, err
	}
	var out []Dead
	for _, m := range rng.Val() {
		out = append(out, toDead(m))
	}
	return out, nil
}

func (q *RedisQueue) Disable(ctx context.Context, endpoint, reason string) error {
	return q.c.Set(ctx, q.off(endpoint), reason, 0).Err()
}

func (q *RedisQueue) Disabled(ctx context.Context, endpoint string) (string, error) {
	v, err := q.c.Get(ctx, q.off(endpoint)).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	return v, err
}

func (q *RedisQueue) Enable(ctx context.Context, endpoint string) error {
	return q.c.Del(ctx, q.off(endpoint)).Err()
}
