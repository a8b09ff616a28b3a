# sluice: `make run` boots what exists, `make test` runs every test.
# Both install what they need (make deps) and can be run again safely.

GO        ?= go
VERSION   := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
export CGO_ENABLED = 0

.PHONY: all deps build test fuzz bench run clean

all: build

# deps installs the Debian packages the tests and the lab use, and the Go
# modules; it skips what is already there.
APT_PACKAGES := iproute2 nftables iputils-ping curl socat tcpdump netcat-openbsd iperf3 time \
	openssh-client tmux diffutils
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	$(GO) mod download

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/sluice ./cmd/sluice

# test runs every test, then again with the race detector (which needs cgo;
# the binary itself never does) on the packages that have concurrency.
# Under CI=true a skipped test fails the run: CI is root and must run the
# kernel tests.
RACE_PACKAGES := ./conntrack/... ./dataplane/droplog ./dataplane/flows ./internal/lab \
	./appliance/... ./tui
test: deps build
	$(GO) vet ./...
	@set -o pipefail; { $(GO) test -count=1 -v ./... && \
		CGO_ENABLED=1 $(GO) test -count=1 -race -v $(RACE_PACKAGES); } 2>&1 | tee .test.log | grep -E '^(--- FAIL|--- SKIP|FAIL|ok|panic|WARNING: DATA RACE)' ; \
	if grep -q -- '--- FAIL' .test.log || grep -q '^FAIL' .test.log || grep -q 'DATA RACE' .test.log; then \
		grep -B30 -A10 -E -- '--- FAIL|^panic|DATA RACE' .test.log | head -400; \
		echo "make test: failures (full log in .test.log)"; exit 1; fi; \
	if [ "$$CI" = true ] && grep -q -- '--- SKIP' .test.log; then echo "make test: tests skipped under CI=true"; exit 1; fi
	@echo "make test: all tests passed"
SHELL := /bin/bash

# fuzz runs each fuzz target for FUZZTIME.
FUZZTIME ?= 60s
fuzz:
	$(GO) test ./dataplane/policy -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME)
	$(GO) test ./dataplane/policy -run '^$$' -fuzz '^FuzzParsePacket$$' -fuzztime $(FUZZTIME)
	$(GO) test ./dataplane/droplog -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME)
	$(GO) test ./conntrack -run '^$$' -fuzz '^FuzzTrack$$' -fuzztime $(FUZZTIME)
	$(GO) test ./conntrack -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME)
	$(GO) test ./conntrack -run '^$$' -fuzz '^FuzzDecodeReference$$' -fuzztime $(FUZZTIME)
	$(GO) test ./appliance/state -run '^$$' -fuzz '^FuzzParseKey$$' -fuzztime $(FUZZTIME)
	$(GO) test ./appliance/state -run '^$$' -fuzz '^FuzzParseVersion$$' -fuzztime $(FUZZTIME)
	$(GO) test ./tui -run '^$$' -fuzz '^FuzzConsole$$' -fuzztime $(FUZZTIME)

bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 3 ./conntrack
	$(GO) test -run '^$$' -bench Evaluate -benchmem -count 5 ./dataplane/policy
	$(GO) test -run '^$$' -bench Apply -benchtime 2x ./dataplane/nft
	$(GO) test -run '^$$' -bench Forward -benchtime 1x -count 3 ./dataplane/nft
	$(GO) test -run '^$$' -bench Flows -benchmem -count 3 ./tui

# run does the most real thing sluice can do until the appliance image
# exists: a lab of network namespaces with sluice routing between an
# "internet" and two lan clients (sluice lab run; needs root), with SSH
# management on the router's lan address. Your SSH public keys
# (~/.ssh/id_*.pub) are authorized in the lab's state directory, .state/.
# Ctrl-C stops it.
run: deps build
	./bin/sluice check
	@if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	for k in $$HOME/.ssh/id_*.pub; do [ -f "$$k" ] && $$SUDO ./bin/sluice key add --state .state "$$k" 2>/dev/null; done; \
	echo "the TUI: sudo ip netns exec sluice-lab-lan1 ssh -i ~/.ssh/id_ed25519 192.168.1.1"; \
	$$SUDO ./bin/sluice lab run --state .state --ssh :22

clean:
	rm -rf bin .test.log .state
