package load

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// BrokerMemory is the broker's memory, read from its /metrics, before the
// connections and with them, and what that makes per connection.
type BrokerMemory struct {
	RSSBefore      float64 `json:"rssBefore"`
	RSSAfter       float64 `json:"rssAfter"`
	HeapBefore     float64 `json:"heapBefore"`
	HeapAfter      float64 `json:"heapAfter"`
	Connections    int64   `json:"connections"`
	RSSPerConnKiB  float64 `json:"rssPerConnectionKiB"`
	HeapPerConnKiB float64 `json:"heapPerConnectionKiB"`
}

// Sample is what the tool reads from the broker's /metrics: RSS and heap in
// use (bytes) and the CPU time it has used (seconds).
type Sample struct {
	RSS, Heap, CPU float64
}

// Scrape reads a Sample from a Prometheus endpoint.
func Scrape(ctx context.Context, metricsURL string) (Sample, error) {
	var s Sample
	if err := CheckLoopback(metricsURL); err != nil {
		return s, err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return s, fmt.Errorf("scrape %s: %w", metricsURL, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		switch name {
		case "process_resident_memory_bytes":
			s.RSS, _ = strconv.ParseFloat(value, 64)
		case "go_memstats_heap_inuse_bytes":
			s.Heap, _ = strconv.ParseFloat(value, 64)
		case "process_cpu_seconds_total":
			s.CPU, _ = strconv.ParseFloat(value, 64)
		}
	}
	if s.RSS == 0 {
		return s, fmt.Errorf("scrape %s: no process_resident_memory_bytes", metricsURL)
	}
	return s, sc.Err()
}

// PerConnection computes the memory each connection costs.
func PerConnection(before, after Sample, conns int64) *BrokerMemory {
	m := &BrokerMemory{RSSBefore: before.RSS, RSSAfter: after.RSS, HeapBefore: before.Heap, HeapAfter: after.Heap, Connections: conns}
	if conns > 0 {
		m.RSSPerConnKiB = (after.RSS - before.RSS) / float64(conns) / 1024
		m.HeapPerConnKiB = (after.Heap - before.Heap) / float64(conns) / 1024
	}
	return m
}

// monitor samples the broker while a run is measured: CPU used from start
// to stop, and the highest RSS seen (every 250 ms).
type monitor struct {
	url    string
	first  Sample
	maxRSS atomic.Uint64
	stop   chan struct{}
	done   chan struct{}
}

func startMonitor(ctx context.Context, url string) *monitor {
	if url == "" {
		return nil
	}
	m := &monitor{url: url, stop: make(chan struct{}), done: make(chan struct{})}
	var err error
	if m.first, err = Scrape(ctx, url); err != nil {
		return nil
	}
	m.maxRSS.Store(uint64(m.first.RSS))
	go func() {
		defer close(m.done)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				if s, err := Scrape(ctx, url); err == nil && uint64(s.RSS) > m.maxRSS.Load() {
					m.maxRSS.Store(uint64(s.RSS))
				}
			case <-m.stop:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return m
}

// finish stops sampling and returns the CPU seconds used since the start
// and the highest RSS seen.
func (m *monitor) finish(ctx context.Context) (cpu, maxRSS float64) {
	close(m.stop)
	<-m.done
	last, err := Scrape(ctx, m.url)
	if err != nil {
		return 0, float64(m.maxRSS.Load())
	}
	return last.CPU - m.first.CPU, max(float64(m.maxRSS.Load()), last.RSS)
}
