#!/bin/bash
# Single-visit model 0.1.0 (issue 19 part 6): ALL FLAIR-hyperintense MS lesions on one FLAIR (no prior).
# Paths are for the worktree /work/wt-single (branch single-visit); change the two /work/wt-single below elsewhere.
# One torch thread on a shared 2-core CPU. Resumable: rerun this same script to continue from stages.json /
# checkpoint_latest.pth. The cases are generated (or found in the cache) BEFORE the command, as realbg4_command.sh
# does, so that generation does not eat into the training budget; the command then reuses them.
set -e
cd /work/wt-single/training
export PYTHONPATH=/work/wt-single/training/src OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nnUNet_n_proc_DA=1 MSNODE_DATA_WORKERS=1
PY=/work/main/.venv/bin/python
ARGS=(--work work/single_visit
  --out ../models/single-visit --name msnode-single-visit --version 0.1.0 --threads 1 --workers 1
  --budget-minutes 58 --training-share 0.74 --pretraining none
  --train-cases 80 --validation-cases 6 --test-cases 8
  --finetune-epochs 200 --iterations 50 --f1-every 10 --foreground-oversampling 0.5
  --lr-schedule time --validation-mode crops --crop-background-boxes 8 --checkpoint-choice whole
  --training-scale "Reduced CPU training: 1 torch thread on a shared 2-core CPU, 58-minute budget, time-based poly learning rate")
if [ ! -f work/single_visit/stages.json ]; then
  "$PY" - "${ARGS[@]}" <<'PYEOF'
import sys, time
from dataclasses import replace
import torch
torch.set_num_threads(1)
from msnode_training.nnunet_data import NETWORK_SIZES
from msnode_training.realbg import log
from msnode_training.single_visit import generate_cases, parse_args, single_visit_seeds
config = parse_args(sys.argv[1:])
seeds = single_visit_seeds(config.seed)
case_config = replace(config.case_config, spacing_zyx=NETWORK_SIZES[config.network_size].spacing_zyx)
for split, n in (("validation", config.validation_cases), ("test", config.test_cases), ("train", config.train_cases)):
    t = time.monotonic()
    _, record = generate_cases(config.work_dir / "cases", seeds[split], range(n), case_config, config.data_workers)
    log(f"pre-generated cases {split}: {n}, key {case_config.key()}, {record}, {time.monotonic() - t:.0f} s")
PYEOF
fi
exec "$PY" -m msnode_training.single_visit "${ARGS[@]}"
