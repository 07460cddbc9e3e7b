package load

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
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

// Scrape reads RSS and heap in use from a Prometheus endpoint.
func Scrape(ctx context.Context, metricsURL string) (rss, heap float64, err error) {
	if err := CheckLoopback(metricsURL); err != nil {
		return 0, 0, err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, fmt.Errorf("scrape %s: %w", metricsURL, err)
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
			rss, _ = strconv.ParseFloat(value, 64)
		case "go_memstats_heap_inuse_bytes":
			heap, _ = strconv.ParseFloat(value, 64)
		}
	}
	if rss == 0 {
		return 0, 0, fmt.Errorf("scrape %s: no process_resident_memory_bytes", metricsURL)
	}
	return rss, heap, sc.Err()
}

// PerConnection computes the memory each connection costs.
func PerConnection(rss0, heap0, rss1, heap1 float64, conns int64) *BrokerMemory {
	m := &BrokerMemory{RSSBefore: rss0, RSSAfter: rss1, HeapBefore: heap0, HeapAfter: heap1, Connections: conns}
	if conns > 0 {
		m.RSSPerConnKiB = (rss1 - rss0) / float64(conns) / 1024
		m.HeapPerConnKiB = (heap1 - heap0) / float64(conns) / 1024
	}
	return m
}
