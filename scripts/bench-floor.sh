#!/usr/bin/env bash
# The floor-scale scenarios of docs/benchmarks.md, each against a baseline
# measured in the same run (these machines are noisy):
#   fanout    1,000 agents, 1,000 all-agent supervisors, 500 changes/s (bare
#             broadcast server with the same message sizes as the baseline)
#   overload  the same at 2,000 changes/s
#   commands  100 agents as fast as they go, and at 10,000 commands/s
#   redis     the same 100 agents on Redis next to memory mode, with Redis's
#             INFO commandstats per command; 5,000 commands/s on Redis;
#             supervisors on a second node at 2,000 changes/s
#   failover  5,000 agents on node A, 200 on node B, kill -9 A; A's agents
#             resume on B with since= (B's agents before the kill: baseline;
#             they run in a ctiload process of their own, as desktops run on
#             machines of their own)
# BASELINE=<broker binary> adds that build to every broker scenario (a
# before/after in the same run). ANCHOR=<centrifugo binary> (v6; `go install
# github.com/centrifugal/centrifugo/v6@v6.9.1`) adds the server issue 14's
# targets were set against to the commands and redis scenarios, loaded by
# `ctiload centrifugo` with the broker's bytes per command. SCENARIOS="fanout
# redis" runs a subset.
# LOADTIME (default 20s) is each measured period. FAILOVER_ARGS adds
# ctiload failover flags (--b-in-process: B's agents in the storm's process).
# Usage: scripts/bench-floor.sh   (or make bench-floor)
set -uo pipefail
cd "$(dirname "$0")/.."
loadtime=${LOADTIME:-20s}
scenarios=${SCENARIOS:-fanout overload commands redis failover}
builds=(bin/ctibroker ${BASELINE:+"$BASELINE"})
pids=()
trap 'kill -9 "${pids[@]}" 2>/dev/null; wait 2>/dev/null' EXIT

# port: a free port below the ephemeral range, which the load's thousands
# of client connections may occupy by the time a server binds.
port() { python3 -c '
import random, socket
while True:
    p = random.randint(10000, 30000)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass
    finally:
        s.close()'; }
wait_http() { for _ in $(seq 100); do curl -sf "$1" >/dev/null && return 0; sleep 0.1; done; echo "no answer from $1" >&2; return 1; }

# broker BIN PORT [ENV=VALUE...]: starts a broker tuned for load (no
# per-agent command rate, no per-address cap), prints its pid.
broker() {
	local bin=$1 p=$2; shift 2
	env CTIBROKER_LIMITS__COMMANDRATE=0 CTIBROKER_LIMITS__CONNECTIONSPERIP=0 CTIBROKER_LIMITS__CONNECTIONS=30000 \
		CTIBROKER_LOG__LEVEL=warn CTIBROKER_LISTEN=127.0.0.1:$p "$@" "$bin" serve >/dev/null 2>>/tmp/bench-floor-broker.err &
	echo $!
}
redis() {
	redis-server --port "$1" --save '' --appendonly no >/dev/null 2>&1 &
	local pid=$!
	for _ in $(seq 50); do redis-cli -p "$1" ping >/dev/null 2>&1 && break; sleep 0.1; done
	echo $pid
}
stop() { kill "$@" 2>/dev/null; wait "$@" 2>/dev/null; }
load() { bin/ctiload --duration "$loadtime" "$@" 2>&1; }

# one BIN ARGS...: one broker, one ctiload run.
one() {
	local bin=$1; shift
	local p pid; p=$(port); pid=$(broker "$bin" "$p"); pids+=("$pid")
	wait_http "http://127.0.0.1:$p/healthz" && load --url "ws://127.0.0.1:$p/v1/ws" "$@"
	stop "$pid"
}

fanout() {
	local rate=$1
	echo "## supervisors: 1,000 agents at $rate changes/s, 1,000 all-agent supervisors, batch frames"
	for b in "${builds[@]}"; do
		echo "### $b"
		one "$b" --agents 1000 --supervisors 1000 --rate "$rate" --batch --sources 8 $([ "$b" = bin/ctibroker ] && echo --baseline)
	done
	echo "### $(basename "${builds[0]}"), compact format"
	one bin/ctibroker --agents 1000 --supervisors 1000 --rate "$rate" --batch --compact --sources 8
}

commands() {
	echo "## commands: 100 agents as fast as they go, then at 10,000 commands/s"
	for b in "${builds[@]}"; do
		echo "### $b"
		one "$b" --agents 100 --batch
		one "$b" --agents 100 --batch --rate 10000
	done
	if [ -n "${ANCHOR:-}" ]; then
		echo "### $ANCHOR (Centrifugo)"
		anchor "" --agents 100
		anchor "" --agents 100 --rate 10000
	fi
}

# anchor REDIS_PORT ARGS...: Centrifugo (memory engine, or Redis's at
# REDIS_PORT) loaded by ctiload centrifugo: anonymous clients publishing to a
# channel of their own, the publication padded to the broker's bytes.
anchor() {
	local rp=$1; shift
	local p pid cfg=/tmp/bench-floor-centrifugo.json; p=$(port)
	python3 - "$p" "$rp" >"$cfg" <<'PY'
import json, sys
port, redis = sys.argv[1], sys.argv[2]
c = {"http_server": {"address": "127.0.0.1", "port": int(port)}, "log": {"level": "error"},
     "client": {"insecure": True, "allowed_origins": ["*"]},
     "channel": {"without_namespace": {"allow_subscribe_for_client": True, "allow_publish_for_client": True}},
     "prometheus": {"enabled": True}}
if redis:
    c["engine"] = {"type": "redis", "redis": {"address": ["redis://127.0.0.1:" + redis]}}
print(json.dumps(c))
PY
	"$ANCHOR" -c "$cfg" >/dev/null 2>>/tmp/bench-floor-broker.err &
	pid=$!; pids+=("$pid")
	wait_http "http://127.0.0.1:$p/metrics" && bin/ctiload centrifugo --duration "$loadtime" --url "ws://127.0.0.1:$p/connection/websocket" "$@" 2>&1
	stop "$pid"
}

# anchor_redis ARGS...: the anchor on a fresh redis-server, with Redis's CPU
# per command.
anchor_redis() {
	local rp rpid; rp=$(port)
	rpid=$(redis "$rp"); pids+=("$rpid")
	local t0; t0=$(awk '{print $14+$15}' /proc/"$rpid"/stat)
	anchor "$rp" "$@" | tee /tmp/bench-floor-redis.out
	local cmds; cmds=$(awk '/^commands/{print $2}' /tmp/bench-floor-redis.out)
	echo "redis-server CPU: $(awk -v a="$t0" -v b="$(awk '{print $14+$15}' /proc/"$rpid"/stat)" -v n="$cmds" 'BEGIN{printf "%.1f µs per command", (b-a)*10000/n}')"
	echo "Redis commands per command: $(redis-cli -p "$rp" info commandstats | awk -F'[:=,]' -v n="$cmds" '/^cmdstat/ && $3/n >= 0.005 {sub("cmdstat_","",$1); printf "%s %.2f  ", $1, $3/n}')"
	stop "$rpid"
}

# redis_run BIN ARGS...: a broker on a fresh redis-server; Redis's CPU and
# INFO commandstats per agent command.
redis_run() {
	local bin=$1; shift
	local rp p rpid pid; rp=$(port); p=$(port)
	rpid=$(redis "$rp"); pids+=("$rpid")
	pid=$(broker "$bin" "$p" CTIBROKER_REDIS__URL=redis://127.0.0.1:$rp/0); pids+=("$pid")
	wait_http "http://127.0.0.1:$p/healthz" || return
	redis-cli -p "$rp" config resetstat >/dev/null
	local t0; t0=$(awk '{print $14+$15}' /proc/"$rpid"/stat)
	load --url "ws://127.0.0.1:$p/v1/ws" "$@" | tee /tmp/bench-floor-redis.out
	local cmds; cmds=$(awk '/^commands/{print $2}' /tmp/bench-floor-redis.out)
	echo "redis-server CPU: $(awk -v a="$t0" -v b="$(awk '{print $14+$15}' /proc/"$rpid"/stat)" -v n="$cmds" 'BEGIN{printf "%.1f µs per command", (b-a)*10000/n}')"
	echo "Redis commands per agent command: $(redis-cli -p "$rp" info commandstats | awk -F'[:=,]' -v n="$cmds" '/^cmdstat/ && $3/n >= 0.005 {sub("cmdstat_","",$1); printf "%s %.2f  ", $1, $3/n}')"
	stop "$pid"; stop "$rpid"
}

# two_nodes BIN: a fresh redis-server and nodes A and B of BIN on it; sets
# redis_pid, node_a, node_b, port_a, port_b; fails when a node does not answer.
two_nodes() {
	local rp; rp=$(port); port_a=$(port); port_b=$(port)
	redis_pid=$(redis "$rp"); pids+=("$redis_pid")
	node_a=$(broker "$1" "$port_a" CTIBROKER_REDIS__URL=redis://127.0.0.1:$rp/0 CTIBROKER_NODE__ID=A); pids+=("$node_a")
	node_b=$(broker "$1" "$port_b" CTIBROKER_REDIS__URL=redis://127.0.0.1:$rp/0 CTIBROKER_NODE__ID=B); pids+=("$node_b")
	wait_http "http://127.0.0.1:$port_a/healthz" && wait_http "http://127.0.0.1:$port_b/healthz"
}

redis_scenarios() {
	echo "## Redis: 100 agents as fast as they go, memory mode then Redis mode (same run)"
	for b in "${builds[@]}"; do
		echo "### $b, memory"
		one "$b" --agents 100 --batch
		echo "### $b, Redis"
		redis_run "$b" --agents 100 --batch
		echo "### $b, Redis at 5,000 commands/s"
		redis_run "$b" --agents 100 --batch --rate 5000
	done
	if [ -n "${ANCHOR:-}" ]; then
		echo "### $ANCHOR (Centrifugo), memory"
		anchor "" --agents 100
		echo "### $ANCHOR (Centrifugo), Redis"
		anchor_redis --agents 100
		echo "### $ANCHOR (Centrifugo), Redis at 5,000 commands/s"
		anchor_redis --agents 100 --rate 5000
	fi
	echo "## Redis: 1,000 agents on node A at 2,000 changes/s, 100 all-agent supervisors on node B"
	for b in "${builds[@]}"; do
		echo "### $b"
		two_nodes "$b" &&
			load --url "ws://127.0.0.1:$port_a/v1/ws" --supervisor-url "ws://127.0.0.1:$port_b/v1/ws" --agents 1000 --supervisors 100 --rate 2000 --batch --sources 8
		stop "$node_a" "$node_b"; stop "$redis_pid"
	done
}

failover() {
	echo "## failover storm: 5,000 agents on node A, 200 on node B, 1,000 commands/s; kill -9 A"
	for b in "${builds[@]}"; do
		echo "### $b"
		two_nodes "$b" &&
			bin/ctiload failover --url "ws://127.0.0.1:$port_a/v1/ws" --failover-url "ws://127.0.0.1:$port_b/v1/ws" --kill-pid "$node_a" \
				--agents 5000 --agents-b 200 --rate 1000 --warmup 8s --after 12s --sources 8 ${FAILOVER_ARGS:-}
		stop "$node_a" "$node_b"; stop "$redis_pid"
	done
}

command -v redis-server >/dev/null || { echo "bench-floor needs redis-server (apt-get install -y redis-server)" >&2; exit 1; }
for s in $scenarios; do
	case $s in
	fanout) fanout 500 ;;
	overload) fanout 2000 ;;
	commands) commands ;;
	redis) redis_scenarios ;;
	failover) failover ;;
	*) echo "unknown scenario $s" >&2; exit 2 ;;
	esac
	echo
done
