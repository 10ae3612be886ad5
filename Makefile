# wgflow build. `make test` and `make demo` install their own dependencies first.
CLANG   ?= clang
ARCH_INC = /usr/include/$(shell gcc -dumpmachine)
BPF_CFLAGS = -O2 -g -target bpf -mcpu=v3 -Wall -Werror -I$(ARCH_INC) -Ibpf

ADDON = native/build/Release/wgflow_native.node

.PHONY: all deps build bpf native ts test bench demo docs clean vm-image vm-box vm-test vm-test-kernel vm-bench-tunnel vm-bench-churn

all: build

deps:
	@bash scripts/install-deps.sh

build: bpf native ts

bpf: bpf/wgflow.bpf.o bpf/wgflow_drops.bpf.o bench/bpf/baseline.bpf.o bench/bpf/drop_empty.bpf.o

bpf/wgflow.bpf.o: bpf/wgflow.bpf.c bpf/wgflow.h
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

bpf/wgflow_drops.bpf.o: bpf/wgflow_drops.bpf.c bpf/wgflow_drops_maps.h bpf/wgflow.h
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

bench/bpf/baseline.bpf.o: bench/bpf/baseline.bpf.c
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

bench/bpf/drop_empty.bpf.o: bench/bpf/drop_empty.bpf.c bpf/wgflow_drops_maps.h bpf/wgflow.h
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

native: $(ADDON)

$(ADDON): native/src/addon.cc native/src/bpf_util.cc native/src/bpf_util.h native/src/drops.cc native/src/drops.h native/src/json_line.cc native/src/json_line.h native/src/wg_netlink.cc native/src/wg_netlink.h native/CMakeLists.txt bpf/wgflow.h
	npx cmake-js compile -d native -O native/build --log-level warn

ts:
	npx tsc -p tsconfig.json
	npx tsc -p tsconfig.bench.json

# The README's test command: installs, builds, runs every test (privileged ones need root).
test: deps build
	node scripts/run-tests.mjs

bench: deps build
	node scripts/run-bench.mjs

# docs/config.md's key table is generated from the configuration schema (checked by a test).
docs: ts
	node -e "const fs=require('fs');const r=require('./dist/config/reference.js');const p='docs/config.md';fs.writeFileSync(p,r.withKeysReference(fs.readFileSync(p,'utf8')))"

demo: deps build
	./bin/wgflow demo

clean:
	rm -rf dist build native/build bpf/*.bpf.o bench/bpf/*.o

# Kernel WireGuard in a Debian 13 VM (vm/README.md). The image is built from Debian packages and
# cached outside the repository by a hash of its recipe; the tree built here is passed in over 9p.
VM_TIMEOUT ?= 5400
# vitest's 60 s per test is sized for the host; under TCG a test takes up to ~20x longer.
VM_VITEST = --testTimeout=900000 --hookTimeout=900000
VM_KERNEL_TESTS = test/datapath/wireguard.test.ts test/integration/daemon.test.ts test/integration/routed.test.ts test/integration/crash.test.ts test/flow/lifecycle.test.ts test/attribution/wireguard-source.test.ts test/integration/live-wireguard.test.ts test/integration/drops.test.ts test/datapath/drops.test.ts

vm-image:
	@bash vm/build-image.sh >/dev/null
	@bash vm/prune-cache.sh

# A local libvirt box of the same image for `vagrant up` (the Vagrantfile uses it when present).
vm-box:
	bash vm/build-box.sh
	@bash vm/prune-cache.sh

# The whole suite in the guest, against kernel WireGuard.
vm-test: deps build vm-image
	bash vm/run.sh --timeout $(VM_TIMEOUT) node scripts/run-tests.mjs $(VM_VITEST)

# The kernel-WireGuard subset (what CI runs): accuracy, the byte-counting toggle, lifecycle (interface
# flap and recreate, SIGTERM, routed START/END), adoption across a crash and restart, and the
# WireGuard attribution source over generic netlink.
vm-test-kernel: deps build vm-image
	bash vm/run.sh --timeout $(VM_TIMEOUT) node scripts/run-tests.mjs $(VM_VITEST) $(VM_KERNEL_TESTS)

# Tunnel overhead through kernel WireGuard in the guest, as ratios against detached runs (BENCHMARKS.md).
vm-bench-tunnel: deps build vm-image
	bash vm/run.sh --timeout 3600 node build/bench/tunnel.js --rounds 3 --seconds 5

# Short flows through kernel WireGuard, zero loss (BENCHMARKS.md 6b); rates sized for emulation.
vm-bench-churn: deps build vm-image
	bash vm/run.sh --timeout 1800 node build/bench/churn.js --step-seconds 8 --seconds 20 --rates 25,50,100,200,400,800
