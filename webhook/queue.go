package webhook

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ctibroker/ctibroker/protocol"
)

// Entry is one outbox message: its id in the partition (ordered), and the
// encoded record.
type Entry struct {
	ID   string
	Data []byte
}

// Dead is a dead-lettered message.
type Dead struct {
	Entry
	Reason string
	At     time.Time
}

// Queue is the durable part: the outbox partitions, the endpoints' cursors,
// the partitions' leases, dead letters and disabled endpoints.
type Queue interface {
	// Append adds records to a partition, in order.
	Append(ctx context.Context, partition int, data [][]byte) error
	// Read returns up to n entries after the entry id after ("" from the
	// start).
	Read(ctx context.Context, partition int, after string, n int) ([]Entry, error)
	// Trim drops the entries up to and including id.
	Trim(ctx context.Context, partition int, upTo string) error
	Cursor(ctx context.Context, endpoint string, partition int) (string, error)
	SetCursor(ctx context.Context, endpoint string, partition int, id string) error
	// Lease takes or renews a partition's lease for node; false: another
	// node holds it.
	Lease(ctx context.Context, partition int, node string, ttl time.Duration) (bool, error)
	DeadLetter(ctx context.Context, endpoint string, d Dead) error
	// Dead lists an endpoint's dead letters, oldest first; total is how
	// many there are.
	Dead(ctx context.Context, endpoint string, offset, n int) (list []Dead, total int, err error)
	// TakeDead removes and returns every dead letter of an endpoint.
	TakeDead(ctx context.Context, endpoint string) ([]Dead, error)
	// Disable marks an endpoint gone (410); Disabled reads it ("": enabled).
	Disable(ctx context.Context, endpoint, reason string) error
	Disabled(ctx context.Context, endpoint string) (string, error)
	Enable(ctx context.Context, endpoint string) error
}

// entryTime is when an entry was appended (its id is "<ms>-<n>").
func entryTime(id string) time.Time {
	ms, _, _ := strings.Cut(id, "-")
	n, _ := strconv.ParseInt(ms, 10, 64)
	return time.UnixMilli(n)
}

// idLess orders entry ids.
func idLess(a, b string) bool {
	am, as, _ := strings.Cut(a, "-")
	bm, bs, _ := strings.Cut(b, "-")
	ai, _ := strconv.ParseUint(am, 10, 64)
	bi, _ := strconv.ParseUint(bm, 10, 64)
	if ai != bi {
		return ai < bi
	}
	an, _ := strconv.ParseUint(as, 10, 64)
	bn, _ := strconv.ParseUint(bs, 10, 64)
	return an < bn
}

// MemoryQueue is the outbox of a broker without Redis: one node, kept as
// long as the process lives.
type MemoryQueue struct {
	mu       sync.Mutex
	parts    map[int][]Entry
	lastMs   int64
	seq      uint64
	cursors  map[string]string
	dead     map[string][]Dead
	disabled map[string]string
}

func NewMemoryQueue() *MemoryQueue {
	return &MemoryQueue{parts: map[int][]Entry{}, cursors: map[string]string{}, dead: map[string][]Dead{}, disabled: map[string]string{}}
}

func (q *MemoryQueue) Append(_ context.Context, p int, data [][]byte) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, d := range data {
		ms := time.Now().UnixMilli()
		if ms <= q.lastMs {
			q.seq++
		} else {
			q.lastMs, q.seq = ms, 0
		}
		q.parts[p] = append(q.parts[p], Entry{ID: fmt.Sprintf("%d-%d", q.lastMs, q.seq), Data: d})
	}
	if n := len(q.parts[p]); n > protocol.WebhookOutboxMax {
		q.parts[p] = append([]Entry(nil), q.parts[p][n-protocol.WebhookOutboxMax:]...)
	}
	return nil
}

func (q *MemoryQueue) Read(_ context.Context, p int, after string, n int) ([]Entry, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []Entry
	for _, e := range q.parts[p] {
		if after == "" || idLess(after, e.ID) {
			out = append(out, e)
			if len(out) == n {
				break
			}
		}
	}
	return out, nil
}

func (q *MemoryQueue) Trim(_ context.Context, p int, upTo string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	es := q.parts[p]
	i := 0
	for i < len(es) && !idLess(upTo, es[i].ID) {
		i++
	}
	q.parts[p] = append([]Entry(nil), es[i:]...)
	return nil
}

func cursorKey(endpoint string, p int) string { return endpoint + ":" + strconv.Itoa(p) }

func (q *MemoryQueue) Cursor(_ context.Context, endpoint string, p int) (string, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.cursors[cursorKey(endpoint, p)], nil
}

func (q *MemoryQueue) SetCursor(_ context.Context, endpoint string, p int, id string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.cursors[cursorKey(endpoint, p)] = id
	return nil
}

func (q *MemoryQueue) Lease(context.Context, int, string, time.Duration) (bool, error) {
	return true, nil
}

func (q *MemoryQueue) DeadLetter(_ context.Context, endpoint string, d Dead) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.dead[endpoint] = append(q.dead[endpoint], d)
	if n := len(q.dead[endpoint]); n > protocol.WebhookDeadMax {
		q.dead[endpoint] = q.dead[endpoint][n-protocol.WebhookDeadMax:]
	}
	return nil
}

func (q *MemoryQueue) Dead(_ context.Context, endpoint string, offset, n int) ([]Dead, int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	all := q.dead[endpoint]
	if offset >= len(all) {
		return nil, len(all), nil
	}
	return append([]Dead(nil), all[offset:min(offset+n, len(all))]...), len(all), nil
}

func (q *MemoryQueue) TakeDead(_ context.Context, endpoint string) ([]Dead, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := q.dead[endpoint]
	delete(q.dead, endpoint)
	return out, nil
}

func (q *MemoryQueue) Disable(_ context.Context, endpoint, reason string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.disabled[endpoint] = reason
	return nil
}

func (q *MemoryQueue) Disabled(_ context.Context, endpoint string) (string, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.disabled[endpoint], nil
}

func (q *MemoryQueue) Enable(_ context.Context, endpoint string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.disabled, endpoint)
	return nil
}
