# sluice: `make run` boots what exists, `make test` runs every test.
# Both install what they need (make deps) and can be run again safely.

GO        ?= go
VERSION   := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
export CGO_ENABLED = 0

.PHONY: all deps kernel build image test fuzz bench run clean

all: build

# deps installs the Debian packages the tests and the lab use, and the Go
# modules; it skips what is already there.
APT_PACKAGES := iproute2 nftables iputils-ping curl socat tcpdump netcat-openbsd iperf3 time \
	openssh-client tmux diffutils qemu-system-x86 ovmf systemd-boot-efi e2fsprogs \
	cpio binutils kmod mtools dosfstools gdisk
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends $$missing; \
	fi
	$(GO) mod download

# kernel fetches Debian's kernel package for the appliance image (KERNEL=cloud
# for VMs, the default; KERNEL=generic for hardware) and extracts it into
# .cache/kernel-$(KERNEL); it does nothing when that is already there.
KERNEL ?= cloud
KERNEL_META = $(if $(filter generic,$(KERNEL)),linux-image-amd64,linux-image-$(KERNEL)-amd64)
KERNEL_DIR = $(CURDIR)/.cache/kernel-$(KERNEL)
export SLUICE_KERNEL_DIR = $(KERNEL_DIR)
kernel: deps
	@if [ ! -f $(KERNEL_DIR)/.done ]; then \
		set -e; mkdir -p .cache/debs; \
		pkg=$$(apt-cache depends --important $(KERNEL_META) | awk '/Depends: linux-image-[0-9]/ {print $$2; exit}'); \
		if [ -z "$$pkg" ]; then echo "no kernel package behind $(KERNEL_META)"; exit 1; fi; \
		echo "fetching $$pkg"; \
		(cd .cache/debs && apt-get download $$pkg 2>&1 | grep -v '^W: Download is performed unsandboxed' || true); \
		rm -rf $(KERNEL_DIR); dpkg-deb -x .cache/debs/$${pkg}_*.deb $(KERNEL_DIR); touch $(KERNEL_DIR)/.done; \
	fi

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/sluice ./cmd/sluice

# test runs every test, then again with the race detector (which needs cgo;
# the binary itself never does) on the packages that have concurrency.
# Under CI=true a skipped test fails the run: CI is root and must run the
# kernel tests.
RACE_PACKAGES := ./conntrack/... ./dataplane/droplog ./dataplane/flows ./internal/lab \
	./appliance/... ./tui
test: deps kernel build
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
	$(GO) test ./dataplane/nft -run '^$$' -fuzz '^FuzzWalkElements$$' -fuzztime $(FUZZTIME)
	$(GO) test ./appliance/state -run '^$$' -fuzz '^FuzzParseVersion$$' -fuzztime $(FUZZTIME)
	$(GO) test ./tui -run '^$$' -fuzz '^FuzzConsole$$' -fuzztime $(FUZZTIME)
	$(GO) test ./dataplane/dhcp -run '^$$' -fuzz '^FuzzParseReply$$' -fuzztime $(FUZZTIME)

bench: kernel
	$(GO) test -run '^$$' -bench . -benchmem -count 3 ./conntrack
	$(GO) test -run '^$$' -bench Evaluate -benchmem -count 5 ./dataplane/policy
	$(GO) test -run '^$$' -bench Apply -benchtime 2x -count 3 ./dataplane/nft
	$(GO) test -run '^$$' -bench Forward -benchtime 1x -count 3 ./dataplane/nft
	$(GO) test -run '^$$' -bench NewFlows -benchtime 2x -count 3 ./dataplane/nft
	$(GO) test -run '^$$' -bench Flows -benchmem -count 3 ./tui
	$(GO) test -run '^$$' -bench Boot -benchtime 3x ./cmd/sluice

# image builds the appliance image, with the built-in default policy, into
# .cache/image (KERNEL=generic for hardware).
image: kernel build
	./bin/sluice image --out .cache/image --kernel $(KERNEL_DIR)

# run boots the appliance image under qemu. This terminal is its serial
# console (Ctrl-A x quits); its lan port is attached to the network
# namespace sluice-vm-lan (192.168.1.10). Paste your SSH public key on the
# console (choice 5), then:
#   sudo ip netns exec sluice-vm-lan ssh -i ~/.ssh/id_ed25519 192.168.1.1
run: image
	@echo "booting the appliance; this terminal is its serial console (Ctrl-A x stops qemu)."
	@echo "paste your SSH public key on the console (choice 5), then from another terminal:"
	@echo "  sudo ip netns exec sluice-vm-lan ssh -i ~/.ssh/id_ed25519 192.168.1.1"
	@if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	$$SUDO ./bin/sluice vm --image .cache/image --lan-netns sluice-vm-lan

clean:
	rm -rf bin .test.log .state .cache/image
