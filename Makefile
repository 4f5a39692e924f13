# msnode: the two commands a new machine needs are `make setup` then `make demo` / `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_DIR := target/demo
DEMO_PAIR := tests/data/lesjak-longitudinal/patient01
# The Series Instance UID of the first file in a folder: the demo analyses series as the store holds them.
series_uid = $(PY) -c "import pydicom,sys; print(pydicom.dcmread(sys.argv[1], stop_before_pixels=True).SeriesInstanceUID)" $$(ls $(1)/* | head -1)
# ONNX Runtime from the onnxruntime==1.31.1 wheel in the venv (no download at build time), whatever
# Python version made the venv. Expanded when a recipe runs, so after `make setup` created it.
export ORT_DYLIB_PATH ?= $(firstword $(wildcard $(abspath $(VENV))/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1))

.PHONY: setup system-deps venv build test demo bench-ingest bench-infer lint

## Install everything the node, its tests and benchmarks need on Debian 12.
setup: system-deps venv

system-deps:
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		dcmtk cmake dcm2niix python3-venv >/dev/null

venv: $(VENV)/.installed

# Test peers and validators, and the training package (torch from PyPI brings CUDA libraries: ~6 GB).
$(VENV)/.installed: tests/requirements.txt training/pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r tests/requirements.txt
	$(VENV)/bin/pip install -q -e './training[test]'
	touch $@

build:
	cargo build --release

## Every test: Rust unit and integration tests (real DCMTK, pynetdicom, dciodvfy, highdicom, dcmqi,
## ONNX Runtime), then the training pipeline's pytest suite (tiny end-to-end run included).
test: venv
	cargo test --all-targets
	cd training && OMP_NUM_THREADS=2 ../$(PY) -m pytest -q

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

## The main job on an embedded default: a real MS patient's two FLAIR visits (tests/data, CC-BY) are
## sent to msnode over DICOM, stored and indexed, then analysed with the shipped model; the results
## (DICOM-SEG, TID 1500 report, overlay series, PNG previews, summary.json) land in target/demo/out.
demo: venv build
	rm -rf $(DEMO_DIR) && mkdir -p $(DEMO_DIR)
	target/release/msnode import-nifti $(DEMO_PAIR)/study1_FLAIR.nii.gz $(DEMO_DIR)/prior \
		--patient-id DEMO01 --study-date 20100101 --series-description "AX FLAIR (prior)"
	target/release/msnode import-nifti $(DEMO_PAIR)/study2_FLAIR.nii.gz $(DEMO_DIR)/current \
		--patient-id DEMO01 --study-date 20100723 --series-description "AX FLAIR (current)"
	sed -e 's|^port = 11112|port = 11190|' -e 's|^data_dir = .*|data_dir = "$(DEMO_DIR)/data"|' \
		-e 's|^destinations = .*|destinations = []|' config/msnode.example.toml > $(DEMO_DIR)/msnode.toml
	target/release/msnode --config $(DEMO_DIR)/msnode.toml serve 2> $(DEMO_DIR)/serve.log & \
	  pid=$$!; trap "kill $$pid" EXIT; \
	  for i in $$(seq 50); do echoscu -aec MSNODE 127.0.0.1 11190 2>/dev/null && break; sleep 0.1; done; \
	  TCP_NODELAY=1 storescu -aec MSNODE 127.0.0.1 11190 $(DEMO_DIR)/prior $(DEMO_DIR)/current +sd && \
	  sleep 0.2 && target/release/msnode --config $(DEMO_DIR)/msnode.toml status
	target/release/msnode --config $(DEMO_DIR)/msnode.toml analyze \
		--current $$($(call series_uid,$(DEMO_DIR)/current)) --prior $$($(call series_uid,$(DEMO_DIR)/prior)) \
		--out $(DEMO_DIR)/out
	@echo "results in $(DEMO_DIR)/out (previews: $(DEMO_DIR)/out/preview/*.png)"

## Ingest throughput against DCMTK storescp (figures in the closing notes).
bench-ingest: venv build
	$(PY) benches/ingest.py

bench-infer: venv build
	$(PY) benches/infer.py
