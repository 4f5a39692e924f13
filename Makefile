# msnode: the two commands a new machine needs are `make setup` then `make demo` / `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_DIR := target/demo

.PHONY: setup system-deps venv build test demo bench-ingest lint

## Install everything the node, its tests and benchmarks need on Debian 12.
setup: system-deps venv

system-deps:
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		dcmtk cmake dcm2niix python3-venv >/dev/null

venv: $(VENV)/.installed

$(VENV)/.installed: tests/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r tests/requirements.txt
	touch $@

build:
	cargo build --release

## Every test: Rust unit and integration tests (real DCMTK and pynetdicom peers).
test: venv
	cargo test --all-targets

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

## The main job on an embedded default: receive a synthetic FLAIR series over DICOM, index it, report.
demo: venv build
	rm -rf $(DEMO_DIR) && mkdir -p $(DEMO_DIR)
	$(PY) tests/tools/make_mr_series.py $(DEMO_DIR)/series --slices 24 --size 256
	sed -e 's|^port = 11112|port = 11190|' -e 's|^data_dir = .*|data_dir = "$(DEMO_DIR)/data"|' \
		config/msnode.example.toml > $(DEMO_DIR)/msnode.toml
	target/release/msnode --config $(DEMO_DIR)/msnode.toml serve 2> $(DEMO_DIR)/serve.log & \
	  pid=$$!; trap "kill $$pid" EXIT; \
	  for i in $$(seq 50); do echoscu -aec MSNODE 127.0.0.1 11190 2>/dev/null && break; sleep 0.1; done; \
	  TCP_NODELAY=1 storescu -aec MSNODE 127.0.0.1 11190 $(DEMO_DIR)/series/*.dcm && \
	  sleep 0.2 && target/release/msnode --config $(DEMO_DIR)/msnode.toml status

## Ingest throughput against DCMTK storescp (figures in the closing notes).
bench-ingest: venv build
	$(PY) benches/ingest.py
