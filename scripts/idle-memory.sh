#!/usr/bin/env bash
# Measures the broker's memory per idle agent session: starts a broker
# (in-memory mode), opens N idle agent sessions from two load processes (a
# process may hold at most `ulimit -Hn` files), forces a GC through the
# loopback pprof listener and reads RSS, heap and stacks from /metrics.
# Usage: scripts/idle-memory.sh [sessions per load process, default 9900]
set -euo pipefail
cd "$(dirname "$0")/.."
per=${1:-9900}
port=18090
dbg=16061
CTIBROKER_LIMITS__COMMANDRATE=0 CTIBROKER_LOG__LEVEL=warn CTIBROKER_LISTEN=127.0.0.1:$port \
	CTIBROKER_DEBUG__LISTEN=127.0.0.1:$dbg bin/ctibroker serve &
broker=$!
trap 'kill $broker 2>/dev/null; kill $(jobs -p) 2>/dev/null; wait' EXIT
for _ in $(seq 50); do curl -sf http://127.0.0.1:$port/readyz >/dev/null && break; sleep 0.1; done

metric() { curl -s http://127.0.0.1:$port/metrics | awk -v m="$1" '$1==m {printf "%.0f", $2}'; }
gc() { curl -s "http://127.0.0.1:$dbg/debug/pprof/heap?gc=1" >/dev/null; sleep 1; curl -s "http://127.0.0.1:$dbg/debug/pprof/heap?gc=1" >/dev/null; }
snapshot() {
	gc
	echo "$(metric process_resident_memory_bytes) $(metric go_memstats_heap_inuse_bytes) $(metric go_memstats_stack_inuse_bytes) $(metric go_goroutines)"
}
read -r rss0 heap0 stack0 g0 < <(snapshot)
for i in 1 2; do
	bin/ctiload --url ws://127.0.0.1:$port/v1/ws --agents "$per" --idle --sources 8 --duration 120s --prefix "idle$i-" >/tmp/idle-load-$i.txt 2>&1 &
done
# Wait until every session is connected.
want=$((2 * per))
for _ in $(seq 240); do
	n=$(curl -s http://127.0.0.1:$port/metrics | awk '$1 ~ /^ctibroker_sessions/ {s+=$2} END {printf "%.0f", s}')
	[ "${n:-0}" -ge "$want" ] && break
	sleep 1
done
sleep 3
read -r rss1 heap1 stack1 g1 < <(snapshot)
curl -s "http://127.0.0.1:$dbg/debug/pprof/heap" >/tmp/idle-heap.pprof
curl -s "http://127.0.0.1:$dbg/debug/pprof/goroutine" >/tmp/idle-goroutine.pprof
curl -s http://127.0.0.1:$port/metrics | grep -E '^go_memstats_(heap|stack|mspan|mcache|other|gc_sys|buck|sys)' >/tmp/idle-memstats.txt
if [ -n "${IDLE_WAIT:-}" ]; then sleep "$IDLE_WAIT"; echo "after ${IDLE_WAIT}s:"; curl -s http://127.0.0.1:$port/metrics | grep -E '^(process_resident|go_memstats_heap_(idle|released|inuse))'; fi
n=$(curl -s http://127.0.0.1:$port/metrics | awk '$1 ~ /^ctibroker_sessions/ {s+=$2} END {printf "%.0f", s}')
awk -v n="$n" -v r0="$rss0" -v r1="$rss1" -v h0="$heap0" -v h1="$heap1" -v s0="$stack0" -v s1="$stack1" -v g0="$g0" -v g1="$g1" 'BEGIN {
	printf "sessions %d\n", n
	printf "RSS    %8.1f MiB -> %8.1f MiB: %5.1f KiB per session\n", r0/1048576, r1/1048576, (r1-r0)/n/1024
	printf "heap   %8.1f MiB -> %8.1f MiB: %5.1f KiB per session\n", h0/1048576, h1/1048576, (h1-h0)/n/1024
	printf "stacks %8.1f MiB -> %8.1f MiB: %5.1f KiB per session\n", s0/1048576, s1/1048576, (s1-s0)/n/1024
	printf "goroutines %d -> %d: %.2f per session\n", g0, g1, (g1-g0)/n
}'
