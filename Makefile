# Entry points for people and CI. `make test` is what CI runs.
SHELL := bash
CARGO ?= cargo

.PHONY: all build release image tools manifests node e2e lint-workflows test fmt-check clippy unit-and-integration bench bench-smoke controlplane crds env-up env-down demo dev clean-dev

all: build

build:
	$(CARGO) build --workspace --bins

## The release binary: static, linked against musl, built exactly as the Dockerfile builds it.
## It is what the image holds and what the bench measures.
MUSL_TARGET := $(shell uname -m)-unknown-linux-musl
RELEASE_BIN := target/$(MUSL_TARGET)/release/baseten-secrets-operator
release:
	hack/musl.sh $(MUSL_TARGET)
	TARGET_CC=musl-gcc $(CARGO) build --release --locked --target $(MUSL_TARGET) --bin baseten-secrets-operator

## The image, with no container engine: the release binary alone, as 65532, in an OCI archive
## that docker, podman, containerd and skopeo load (target/image/baseten-secrets-operator.tar).
IMAGE_TAR := target/image/baseten-secrets-operator.tar
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
IMAGE_ARCH := $(subst aarch64,arm64,$(subst x86_64,amd64,$(shell uname -m)))
image: release
	@mkdir -p $(dir $(IMAGE_TAR))
	python3 hack/oci-image.py $(RELEASE_BIN) $(VERSION) $(IMAGE_ARCH) $(IMAGE_TAR)

## Other tools, built from pinned Go modules (tests/tools) into target/tools/bin: actionlint,
## helm and promtool, and the Prometheus Operator's CRDs into target/tools/crds.
tools:
	tests/tools/build.sh

## Lints the release workflow, which cannot run here (`make test` runs it).
lint-workflows: tools
	target/tools/bin/actionlint -no-color .github/workflows/*.yml

## The node's kubelet, kube-scheduler and kube-proxy, from the same pinned module (for e2e).
node:
	tests/controlplane/build.sh node

## The operator as users run it: the image on a real one-node cluster in a private network
## namespace (kubelet, containerd, runc, CNI), each overlay, HA failover and the Helm chart.
## Needs root; installs Debian's containerd, runc and CNI plugins the first time.
e2e: controlplane node tools image
	VERSION=$(VERSION) IMAGE_TAR=$(IMAGE_TAR) hack/e2e/run.sh

## Builds etcd, kube-apiserver, kube-controller-manager and kubectl from upstream Go modules
## into target/controlplane/bin (once; rebuilt only when the pinned versions change).
controlplane:
	tests/controlplane/build.sh

## Regenerates the committed CRDs from the Rust types.
crds:
	$(CARGO) run --quiet --bin crdgen > crds/basetensecrets.yaml
	$(CARGO) run --quiet --bin crdgen sets > crds/basetensecretsets.yaml
	cp crds/basetensecrets.yaml crds/basetensecretsets.yaml charts/baseten-secrets-operator/crds/

## Renders deploy/base's files and the components' resources from the Helm chart, their one
## source (tests/chart.rs fails when the committed files drift from it).
manifests: tools
	hack/render-manifests.sh

## Everything: formatting, lints, unit, contract and integration tests, no leftover processes.
test: controlplane fmt-check clippy lint-workflows image unit-and-integration bench-smoke
	@echo "fault table (tests/faults.rs):" && cat target/fault-table.md
	hack/check-no-leftovers.sh

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Property tests run a fixed set of cases in CI; set PROPTEST_RNG_SEED to explore others.
PROPTEST_RNG_SEED ?= 20261203
unit-and-integration:
	PROPTEST_RNG_SEED=$(PROPTEST_RNG_SEED) $(CARGO) test --workspace

## The module-shape check alone: imports point down the layers, files and functions stay
## small (tests/layers.rs; `make test` runs it too).
.PHONY: check-layers
check-layers:
	$(CARGO) test --test layers

## Measures convergence, propagation, steady state, restart, footprint and apiserver load
## (BENCH_N, BENCH_VALUE_BYTES, BENCH_NOISE, BENCH_STEADY_SECS, BENCH_UPDATES, BENCH_OUT).
bench: controlplane release
	$(CARGO) run --quiet --release --locked -p bench

## The bench at a tiny size, so it cannot rot; fails when a correctness figure misses.
bench-smoke: controlplane release
	BENCH_N=20 BENCH_NOISE=40 BENCH_UPDATES=20 BENCH_STEADY_SECS=3 BENCH_STRICT=1 \
	  BENCH_OUT=target/bench-smoke $(CARGO) run --quiet --release --locked -p bench

## Starts a local control plane and the Baseten emulator in the background; writes target/dev/env.
env-up: controlplane
	$(CARGO) run --quiet -p testenv -- up --dir target/dev

## Stops what env-up started.
env-down:
	$(CARGO) run --quiet -p testenv -- down --dir target/dev

## The operator end to end with no cluster needed; stops everything at the end.
demo: controlplane
	hack/demo.sh demo

## Like demo, but leaves everything running and prints how to use it.
dev: controlplane
	hack/demo.sh dev
