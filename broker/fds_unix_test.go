//go:build unix

package broker

import (
	"runtime"
	"testing"
)

func TestFitConnections(t *testing.T) {
	pool := 10*runtime.GOMAXPROCS(0) + 1
	for _, tc := range []struct {
		name   string
		want   int
		nofile uint64
		redis  RedisConfig
		got    int
	}{
		{"fits", 10000, 1 << 20, RedisConfig{}, 10000},
		{"memory store at 20000 files", 30000, 20000, RedisConfig{}, 20000 - 64 - 16},
		{"19,800 idle sessions fit in 20000 files", 19800, 20000, RedisConfig{}, 19800},
		{"redis pool reserved", 30000, 20000, RedisConfig{URL: "redis://127.0.0.1:6379"}, 20000 - 64 - 16 - pool},
		{"one pool per cluster node", 30000, 20000, RedisConfig{Addrs: []string{"a:1", "b:1", "c:1"}}, 20000 - 64 - 16 - 3*(pool-1) - 1},
		{"never below one", 100, 50, RedisConfig{}, 1},
	} {
		if got := fitConnections(tc.want, tc.nofile, tc.redis); got != tc.got {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.got)
		}
	}
}
