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

.PHONY: setup system-deps venv build test demo bench-ingest bench-infer bench-scaling bench-workflow bench-load lint fuzz package test-package test-docker

## Install everything the node, its tests and benchmarks need on Debian 12.
setup: system-deps venv

system-deps:
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		dcmtk orthanc curl cmake dcm2niix python3-venv dpkg-dev adduser chromium >/dev/null

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

## The .deb (cargo-deb, installed on first use): binary, ONNX Runtime from the wheel with its licence,
## models/realbg and models/single-visit, /etc/msnode/msnode.toml, the msnode user, /var/lib/msnode and the systemd unit.
DEB_STAGING := target/deb-staging
ORT_WHEEL_DIR = $(dir $(ORT_DYLIB_PATH))..
package: venv build
	command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --version 3.8.0
	rm -rf $(DEB_STAGING) && mkdir -p $(DEB_STAGING)
	cp $(ORT_DYLIB_PATH) $(DEB_STAGING)/libonnxruntime.so.1.31.1
	cp $(ORT_WHEEL_DIR)/LICENSE $(DEB_STAGING)/onnxruntime-LICENSE
	cp $(ORT_WHEEL_DIR)/ThirdPartyNotices.txt $(DEB_STAGING)/onnxruntime-ThirdPartyNotices.txt
	packaging/packaged-config.sh config/msnode.example.toml > $(DEB_STAGING)/msnode.toml
	cargo deb --no-build

## Install the .deb on this machine with dpkg -i, check it as installed, then purge it.
test-package: package
	packaging/test-deb.sh target/debian/msnode_*.deb

## Dockerfile and Dockerfile.cuda without a Docker engine: hadolint, then the CPU image's stages run
## in a shell and its layout served until its own health check passes (packaging/docker/check-stages.sh).
test-docker: venv
	packaging/docker/check-stages.sh

## Every test: Rust unit and integration tests (real DCMTK, pynetdicom, dciodvfy, highdicom, dcmqi,
## ONNX Runtime), then the training pipeline's pytest suite (tiny end-to-end run included).
test: venv
	cargo test --all-targets
	cd training && OMP_NUM_THREADS=2 ../$(PY) -m pytest -q

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

## The main job on an embedded default, as a site runs it: a local PACS (DCMTK storescp) and msnode
## are started; a real MS patient's two FLAIR visits (tests/data, CC-BY) are sent to msnode over DICOM;
## msnode notices the series are complete, recognises the FLAIR, finds the prior in its index, runs the
## shipped model and sends the DICOM-SEG, the TID 1500 report and the overlay series to the PACS by
## itself (the first visit, without a prior, gets a lesion-load report from the single-visit model). The demo waits until the PACS holds them and prints the job (lesions, timings, deliveries).
demo: venv build
	rm -rf $(DEMO_DIR) && mkdir -p $(DEMO_DIR)/pacs
	target/release/msnode import-nifti $(DEMO_PAIR)/study1_FLAIR.nii.gz $(DEMO_DIR)/prior --as-acquired \
		--patient-id DEMO01 --study-date 20100101 --series-description "AX T2 FLAIR"
	target/release/msnode import-nifti $(DEMO_PAIR)/study2_FLAIR.nii.gz $(DEMO_DIR)/current --as-acquired \
		--patient-id DEMO01 --study-date 20100723 --series-description "AX T2 FLAIR"
	sed -e 's|^port = 11112|port = 11190|' -e 's|^port = 4242|port = 11191|' \
		-e 's|^data_dir = .*|data_dir = "$(DEMO_DIR)/data"|' \
		-e 's|^stable_series_timeout_s = .*|stable_series_timeout_s = 3|' \
		-e 's|^retry_delay_s = .*|retry_delay_s = 2|' \
		-e 's|^bind = "127.0.0.1:8080"|bind = "127.0.0.1:11192"|' \
		config/msnode.example.toml > $(DEMO_DIR)/msnode.toml
	storescp -aet PACS -od $(DEMO_DIR)/pacs 11191 2> $(DEMO_DIR)/pacs.log & pacs=$$!; \
	  target/release/msnode --config $(DEMO_DIR)/msnode.toml serve 2> $(DEMO_DIR)/serve.log & node=$$!; \
	  trap "kill $$node $$pacs" EXIT; \
	  for i in $$(seq 50); do echoscu -aec MSNODE 127.0.0.1 11190 2>/dev/null && break; sleep 0.1; done; \
	  TCP_NODELAY=1 storescu -aec MSNODE 127.0.0.1 11190 $(DEMO_DIR)/prior $(DEMO_DIR)/current +sd || exit 1; \
	  current=$$($(call series_uid,$(DEMO_DIR)/current)); \
	  for i in $$(seq 600); do \
	    state=$$(target/release/msnode --config $(DEMO_DIR)/msnode.toml jobs --json | $(PY) -c \
	      "import json,sys; print(next((j['state'] for j in json.load(sys.stdin) if j['current_series']==sys.argv[1]),'waiting'))" $$current); \
	    case $$state in done|failed|no_prior) break;; esac; sleep 0.5; \
	  done; \
	  id=$$(target/release/msnode --config $(DEMO_DIR)/msnode.toml jobs --json | $(PY) -c \
	    "import json,sys; print(next(j['id'] for j in json.load(sys.stdin) if j['current_series']==sys.argv[1]))" $$current); \
	  target/release/msnode --config $(DEMO_DIR)/msnode.toml job $$id; \
	  echo "every job (the first visit, which has no prior, gets its lesion load from the single-visit model):"; \
	  target/release/msnode --config $(DEMO_DIR)/msnode.toml jobs; \
	  target/release/msnode --config $(DEMO_DIR)/msnode.toml status | tail -2; \
	  echo "admin server (http://127.0.0.1:11192/ while the node runs), /readyz:"; \
	  $(PY) -c "import urllib.request as u; print(u.urlopen('http://127.0.0.1:11192/readyz').read().decode(), end='')"; \
	  echo "job $$id: $$state; the PACS holds $$(ls $(DEMO_DIR)/pacs | wc -l) result instance(s) in $(DEMO_DIR)/pacs"; \
	  echo "previews: $(DEMO_DIR)/data/results/job-$$id/preview/*.png"; \
	  test "$$state" = done

## Ingest throughput of msnode, Orthanc (durable) and DCMTK storescp, and the durable floor, side by side.
bench-ingest: venv build
	$(PY) benches/ingest.py

bench-infer: venv build
	$(PY) benches/infer.py
	$(PY) benches/infer.py --model models/realbg-int8 --mirroring off

## `msnode analyze` per stage and peak memory against the input size (the real pair resampled finer)
## and threads (1, 2), the default model (realbg) and its int8 copy; nnU-Net's predictor as the
## inference peer (fp32 only: it has the checkpoint).
bench-scaling: venv build
	$(PY) benches/scaling.py --models models/realbg models/realbg-int8

## From the last instance of a follow-up acknowledged to the last result acknowledged by a local PACS.
bench-workflow: venv build
	$(PY) benches/workflow.py

## 50 associations (storescu and pynetdicom) sending for 3 minutes; every acknowledged instance checked.
bench-load: venv build
	$(PY) benches/load.py

FUZZ_TARGETS := command_set query_identifier association_pdu stored_instance series_volume
FUZZ_SECONDS ?= 300
## libFuzzer over each target for FUZZ_SECONDS (nightly toolchain and `cargo install cargo-fuzz`).
## New inputs go to fuzz/work/ (ignored); the committed corpus is read, never written.
fuzz:
	for t in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/work/$$t && \
		cargo +nightly fuzz run -O $$t fuzz/work/$$t fuzz/corpus/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 || exit 1; \
	done
