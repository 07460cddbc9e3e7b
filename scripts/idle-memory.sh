#!/usr/bin/env bash
# Measures the broker's memory per idle agent session (docs/benchmarks.md).
# Starts a broker (in-memory mode, its defaults otherwise), opens N idle
# agent sessions from two load processes (a process may hold at most
# `ulimit -Hn` files), and reports RSS, heap and stacks per session from
# /metrics:
#   - right after connecting, with a GC forced through the loopback pprof
#     listener (what memory the sessions hold, plus what connecting them
#     left behind and the runtime has not given back yet);
#   - every 10 s over IDLE_WAIT seconds (default 240: past the replay TTL) of idleness, no GC
#     forced: the steady state, whose peak includes the collector's headroom.
# Heap profiles: /tmp/idle-heap.pprof (after connecting), /tmp/idle-heap-end.pprof.
# BROKER=<binary> measures another build (a baseline); BROKER_STDERR=<file>
# keeps the broker's stderr (e.g. with GODEBUG=gctrace=1). BARE=1 measures
# the floor instead: a bare coder/websocket server (`ctiload echo`) holding
# the connections the way the broker does (a reader goroutine each, the
# library's pings when silent for 30 s) and nothing else.
# Usage: scripts/idle-memory.sh [sessions per load process, default 9900]
set -euo pipefail
cd "$(dirname "$0")/.."
per=${1:-9900}
wait_s=${IDLE_WAIT:-240}
port=18090
dbg=16061
url=ws://127.0.0.1:$port/v1/ws bare=() count=ctibroker_sessions
if [ -n "${BARE:-}" ]; then
	dbg=$port url=ws://127.0.0.1:$port/ bare=(--bare) count=ctiload_echo_connections
	bin/ctiload echo --listen 127.0.0.1:$port --ping 30s 2>>"${BROKER_STDERR:-/dev/stderr}" &
else
	CTIBROKER_LIMITS__COMMANDRATE=0 CTIBROKER_LIMITS__CONNECTIONS=30000 CTIBROKER_LIMITS__CONNECTIONSPERIP=0 \
		CTIBROKER_LOG__LEVEL=warn CTIBROKER_LISTEN=127.0.0.1:$port \
		CTIBROKER_DEBUG__LISTEN=127.0.0.1:$dbg "${BROKER:-bin/ctibroker}" serve 2>>"${BROKER_STDERR:-/dev/stderr}" &
fi
trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT
for _ in $(seq 50); do curl -sf http://127.0.0.1:$port/metrics >/dev/null && break; sleep 0.1; done

metrics() { curl -s http://127.0.0.1:$port/metrics; }
metric() { metrics | awk -v m="$1" '$1==m {printf "%.0f", $2}'; }
gc() { curl -s "http://127.0.0.1:$dbg/debug/pprof/heap?gc=1" >/dev/null; sleep 1; curl -s "http://127.0.0.1:$dbg/debug/pprof/heap?gc=1" >/dev/null; }
sessions() { metric $count; }
gc
rss0=$(metric process_resident_memory_bytes) heap0=$(metric go_memstats_heap_inuse_bytes) stack0=$(metric go_memstats_stack_inuse_bytes) g0=$(metric go_goroutines)
for i in 1 2; do
	bin/ctiload --url $url "${bare[@]}" --agents "$per" --idle --sources 8 --duration $((wait_s + 60))s \
		--prefix "idle$i" >/tmp/idle-load-$i.txt 2>&1 &
done
want=$((2 * per))
for _ in $(seq 240); do
	[ "$(sessions)" -ge "$want" ] && break
	sleep 1
done
n=$(sessions)
per_session() { awk -v n="$n" -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", (b-a)/n/1024}'; }
gc
rss1=$(metric process_resident_memory_bytes) heap1=$(metric go_memstats_heap_inuse_bytes) stack1=$(metric go_memstats_stack_inuse_bytes) g1=$(metric go_goroutines)
curl -s "http://127.0.0.1:$dbg/debug/pprof/heap" >/tmp/idle-heap.pprof
echo "sessions: $n"
echo "after connecting, GC forced: RSS $(per_session "$rss0" "$rss1") KiB, heap in use $(per_session "$heap0" "$heap1") KiB, stacks $(per_session "$stack0" "$stack1") KiB per session; goroutines $g0 -> $g1"
# Where the resident memory is, per session: live objects, the rest of the
# heap's spans (fragmentation), freed spans not yet returned to the OS, and
# the runtime's own metadata.
breakdown() {
	metrics | awk -v n="$n" '
		$1=="go_memstats_heap_alloc_bytes" {live=$2}
		$1=="go_memstats_heap_inuse_bytes" {inuse=$2}
		$1=="go_memstats_heap_idle_bytes" {idle=$2}
		$1=="go_memstats_heap_released_bytes" {rel=$2}
		$1=="go_memstats_stack_inuse_bytes" {stack=$2}
		$1=="go_memstats_gc_sys_bytes" {gcsys=$2}
		$1=="go_memstats_mspan_inuse_bytes" {mspan=$2}
		$1=="go_memstats_other_sys_bytes" {other=$2}
		END {k=n*1024; printf "  %s: live heap %.1f, span slack %.1f, unreturned %.1f, stacks %.1f, GC/span/other metadata %.1f KiB per session (totals, not increments)\n", lbl, live/k, (inuse-live)/k, (idle-rel)/k, stack/k, (gcsys+mspan+other)/k}' lbl="$1"
}
breakdown "after connecting, GC forced"
min=0 max=0 cpu0=$(metrics | awk '$1=="process_cpu_seconds_total" {print $2}') gc0=$(metric go_gc_duration_seconds_count)
for t in $(seq 10 10 "$wait_s"); do
	sleep 10
	r=$(metric process_resident_memory_bytes)
	[ "$min" = 0 ] || [ "$r" -lt "$min" ] && min=$r
	[ "$r" -gt "$max" ] && max=$r
	echo "  idle ${t}s: RSS $(per_session "$rss0" "$r") KiB per session (heap in use $(( $(metric go_memstats_heap_inuse_bytes) / 1048576 )) MiB, GCs $(metric go_gc_duration_seconds_count))"
done
breakdown "after ${wait_s}s idle"
cpu1=$(metrics | awk '$1=="process_cpu_seconds_total" {print $2}') gc1=$(metric go_gc_duration_seconds_count)
awk -v a="$cpu0" -v b="$cpu1" -v t="$wait_s" -v g=$((gc1 - gc0)) 'BEGIN {printf "  CPU while idle: %.1f s in %d s (%.2f%% of one core), %d collections\n", b-a, t, 100*(b-a)/t, g}'
# A heap profile shows the heap as of a collection or two ago: force two.
gc
breakdown "after ${wait_s}s idle, GC forced"
curl -s "http://127.0.0.1:$dbg/debug/pprof/heap" >/tmp/idle-heap-end.pprof
echo "idle ${wait_s}s, no GC forced: RSS min $(per_session "$rss0" "$min") KiB, max $(per_session "$rss0" "$max") KiB per session; $(sessions) sessions still connected"
