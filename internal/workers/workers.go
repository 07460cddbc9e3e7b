// Package workers runs short tasks on reused goroutines.
//
// The broker gives a session or a connection a goroutine only while it has
// work, so that idle ones cost no stack. A goroutine that starts with the
// minimum stack must grow it (by copying) to the depth of its work, and
// done afresh for every command that is what costs. So a goroutine that
// finished a task stays parked, with its grown stack, for the next task;
// one parked for longer than the pool's idle time exits (Reap). The most
// recently used are reused first, so a quiet broker's extra ones age out.
//
// Locking: mu guards idle and closed. A worker is in idle exactly while it
// waits on its channel; whoever takes it out of idle sends it one task (or
// nil: exit) on the channel, which has room for that one.
package workers

import (
	"sync"
	"time"
)

// Pool is a set of reused goroutines. The zero Pool is ready to use.
type Pool struct {
	mu     sync.Mutex
	idle   []*worker
	closed bool
	wg     sync.WaitGroup
}

type worker struct {
	tasks    chan func()
	parkedAt time.Time
}

// Go runs task on an idle worker, or on a new one.
func (p *Pool) Go(task func()) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		w := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		w.tasks <- task
		return
	}
	p.wg.Add(1)
	p.mu.Unlock()
	go p.loop(&worker{tasks: make(chan func(), 1)}, task)
}

func (p *Pool) loop(w *worker, task func()) {
	defer p.wg.Done()
	for task != nil {
		task()
		task = nil // not kept alive while parked
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return
		}
		w.parkedAt = time.Now()
		p.idle = append(p.idle, w)
		p.mu.Unlock()
		task = <-w.tasks
	}
}

// Idle returns how many workers are parked.
func (p *Pool) Idle() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

// Reap stops the workers parked for longer than maxIdle.
func (p *Pool) Reap(maxIdle time.Duration) {
	cutoff := time.Now().Add(-maxIdle)
	p.mu.Lock()
	n := 0 // idle is oldest first: the ones to stop are a prefix
	for n < len(p.idle) && p.idle[n].parkedAt.Before(cutoff) {
		n++
	}
	stale := make([]*worker, n)
	copy(stale, p.idle[:n])
	p.idle = append(p.idle[:0], p.idle[n:]...)
	clear(p.idle[len(p.idle):cap(p.idle)])
	p.mu.Unlock()
	for _, w := range stale {
		w.tasks <- nil
	}
}

// Close stops every worker once its task is done and waits for them. Go
// must not be called after Close.
func (p *Pool) Close() {
	p.mu.Lock()
	p.closed = true
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, w := range idle {
		w.tasks <- nil
	}
	p.wg.Wait()
}
