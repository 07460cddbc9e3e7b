# ctibroker. `make run` starts a broker on 127.0.0.1:8080 with the embedded
# defaults; `make test` runs every test with the race detector (and the two
# that measure stack and allocations once more without it).
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: run build test vet fmt lint fuzz bench bench-idle bench-floor readme-fsm proto clean

run:
	$(GO) run -ldflags "$(LDFLAGS)" ./cmd/ctibroker serve --log-format console

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/ctibroker ./cmd/ctibroker
	$(GO) build -o bin/ctiload ./cmd/ctiload

# gotestsum (a tool of go.mod) runs go test and ends with a summary that
# lists every skipped test with its reason (a suite that needs redis-server,
# chromium or node skips loudly without it) and the failures.
test: lint
	$(GO) tool gotestsum --format pkgname-and-test-fails --format-hide-empty-pkg -- -race -count=1 -timeout 8m ./...

lint:
	@out=$$(gofmt -l $$(find . -name '*.go' -not -path './.git/*')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Short fuzzing runs of every decoder (FUZZTIME=1m for longer).
FUZZTIME ?= 15s
fuzz:
	$(GO) test ./protocol -run '^$$' -fuzz FuzzDecodeRequest -fuzztime $(FUZZTIME)
	$(GO) test ./protocol -run '^$$' -fuzz FuzzParseTarget -fuzztime $(FUZZTIME)
	$(GO) test ./protocol -run '^$$' -fuzz FuzzParseInteractionTarget -fuzztime $(FUZZTIME)
	$(GO) test ./channel -run '^$$' -fuzz FuzzParseCommand -fuzztime $(FUZZTIME)
	$(GO) test ./broker -run '^$$' -fuzz FuzzRESTQuery -fuzztime $(FUZZTIME)
	$(GO) test ./adapters/remote/v1 -run '^$$' -fuzz FuzzToEvent -fuzztime $(FUZZTIME)
	$(GO) test ./session -run '^$$' -fuzz FuzzQueueView -fuzztime $(FUZZTIME)
	$(GO) test ./load -run '^$$' -fuzz FuzzScanEvent -fuzztime $(FUZZTIME)

# Benchmarks (figures, and the commands that made them: docs/benchmarks.md):
# Go micro-benchmarks, socket-level memory vs Redis benchmarks (need
# redis-server), then short ctiload runs against a fresh broker (status
# changes, then call flows) with the bare-WebSocket baseline measured in the
# same run.
BENCHTIME ?= 2s
LOADTIME ?= 10s
bench: build
	$(GO) test -run '^$$' -bench . -benchtime $(BENCHTIME) -benchmem -count 1 ./protocol ./channel ./session ./bus ./broker 
	@CTIBROKER_LIMITS__COMMANDRATE=0 CTIBROKER_LIMITS__CONNECTIONSPERIP=0 CTIBROKER_LOG__LEVEL=warn CTIBROKER_LISTEN=127.0.0.1:18080 bin/ctibroker serve & pid=$$!; \
	sleep 1; bin/ctiload --url ws://127.0.0.1:18080/v1/ws --agents 100 --duration $(LOADTIME) --baseline; rc=$$?; \
	kill $$pid; wait $$pid; [ $$rc = 0 ] || exit $$rc
	@echo "status flow, the switch in an adapter process (adapter.kind remote, ctibroker adapter sim):"
	@CTIBROKER_LOG__LEVEL=warn bin/ctibroker adapter sim --listen 127.0.0.1:18070 >/dev/null & apid=$$!; sleep 1; \
	CTIBROKER_ADAPTER__KIND=remote CTIBROKER_ADAPTER__REMOTE__ADDR=127.0.0.1:18070 CTIBROKER_LIMITS__COMMANDRATE=0 CTIBROKER_LIMITS__CONNECTIONSPERIP=0 CTIBROKER_LOG__LEVEL=warn CTIBROKER_LISTEN=127.0.0.1:18080 bin/ctibroker serve & pid=$$!; \
	sleep 1; bin/ctiload --url ws://127.0.0.1:18080/v1/ws --agents 100 --duration $(LOADTIME) --baseline; rc=$$?; \
	kill $$pid; wait $$pid; kill $$apid; wait $$apid; [ $$rc = 0 ] || exit $$rc
	@echo "interaction flow (dial, hold, retrieve, release):"
	@CTIBROKER_ADAPTER__SIM__DIALANSWER=0s CTIBROKER_LIMITS__COMMANDRATE=0 CTIBROKER_LIMITS__CONNECTIONSPERIP=0 CTIBROKER_LOG__LEVEL=warn CTIBROKER_LISTEN=127.0.0.1:18080 bin/ctibroker serve & pid=$$!; \
	sleep 1; bin/ctiload --url ws://127.0.0.1:18080/v1/ws --agents 100 --duration $(LOADTIME) --batch --interactions --baseline; rc=$$?; \
	kill $$pid; wait $$pid; exit $$rc

# Floor scale (needs redis-server; about 10 minutes): supervisors' fan-out at
# 500 and 2,000 changes/s, commands, Redis mode beside memory mode, and a
# failover storm, each with a baseline from the same run (scripts/bench-floor.sh;
# BASELINE=<broker binary> adds an older build, ANCHOR=<centrifugo binary> the
# server issue 14 was measured against, SCENARIOS= picks some).
bench-floor: build
	scripts/bench-floor.sh

# Memory of 19,800 idle sessions (two load processes: a process may hold
# at most 20,000 files here); IDLE_WAIT=seconds of idleness to watch.
bench-idle: build
	scripts/idle-memory.sh

# Rewrites the state diagrams embedded in README.md (the channel's, then the
# interaction's) from `ctibroker fsm`.
# The adapter protocol's generated code (committed). Needs protoc
# (apt-get install protobuf-compiler) and the two Go plugins, installed
# here at the versions the committed code was made with.
PROTOC_GEN_GO ?= v1.36.12
PROTOC_GEN_GO_GRPC ?= v1.5.1
proto:
	GOBIN=$(CURDIR)/bin $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO)
	GOBIN=$(CURDIR)/bin $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC)
	PATH=$(CURDIR)/bin:$$PATH protoc -I adapters/remote/v1 --go_out=adapters/remote/v1 --go_opt=paths=source_relative \
		--go-grpc_out=adapters/remote/v1 --go-grpc_opt=paths=source_relative adapters/remote/v1/adapter.proto

readme-fsm:
	@$(GO) run ./cmd/ctibroker fsm > /tmp/ctibroker-fsm.mmd
	@$(GO) run ./cmd/ctibroker fsm --interaction > /tmp/ctibroker-fsm-ix.mmd
	@python3 -c 'import re,sys; r=open("README.md").read(); ms=iter([open("/tmp/ctibroker-fsm.mmd").read(), open("/tmp/ctibroker-fsm-ix.mmd").read()]); open("README.md","w").write(re.sub(r"```mermaid\n.*?```", lambda _: "```mermaid\n"+next(ms)+"```", r, count=2, flags=re.S))'

clean:
	rm -rf bin
