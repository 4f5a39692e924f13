#!/bin/bash
# Issue 19 part 7: the transfer experiment at the real-background setting (de novo vs other-pathology pretraining
# vs inpainting pretraining, fine-tuned on N = 2, 5, 10 real-background pairs, same iterations and seeds), on ONE
# torch thread of a 2-core CPU. Resumable: rerun this script to continue from stages.json. Needs the release binary
# (`cargo build --release`) for the patient03 scores through `msnode analyze`.
set -e
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD/src OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nnUNet_n_proc_DA=1 MSNODE_DATA_WORKERS=1
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(ls "$PWD"/../.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1)}
exec ../.venv/bin/python -m msnode_training.realbg_transfer --work work/transfer_realbg \
  --binary ../target/release/msnode --threads 1 --workers 1 --pretrain-epochs 8 --finetune-epochs 6 "$@"
