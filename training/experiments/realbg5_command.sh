#!/bin/bash
# realbg 0.5.0 round (issue 19, fifth round): ONE lever against 0.2.0's training pairs, the pretraining: supervised
# other-pathology pretraining on 16 real-background pairs (`--pretraining other_pathology`: a mass or a wedge is
# the only labelled change; the transfer experiment's best start) instead of inpainting. Training pairs at the
# default generator (1-6 new lesions, no affine residual, no faint lesions: 0.2.0's); everything else is realbg4's
# command (8 crop background boxes, crop proxy every 14 epochs, FP-aware whole-volume checkpoint choice, training
# share 0.72, pretraining share 0.2). Resumable: rerun this same script to continue from stages.json /
# checkpoint_latest.pth. The validation (stream 7) and test (stream 8) pairs are the default generator's, key
# 3b2d1de70d62: the same pairs realbg 0.1.0-0.4.0 were scored on. All pairs are generated (or found in the cache)
# BEFORE the command, as in rounds 2-4, so that generation does not eat into the training budget.
set -e
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD/src OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nnUNet_n_proc_DA=1 MSNODE_DATA_WORKERS=1
PY=../.venv/bin/python
ARGS=(--work work/realbg5
  --out work/realbg5/export --name msnode-realbg --version 0.5.0 --threads 1 --workers 1
  --budget-minutes 75 --training-share 0.72 --pretrain-share 0.2
  --pretraining other_pathology --pretrain-pairs 16
  --train-pairs 96 --validation-pairs 10 --test-pairs 8
  --pretrain-epochs 200 --finetune-epochs 200 --iterations 50 --f1-every 14
  --lr-schedule time --validation-mode crops --crop-background-boxes 8
  --early-stopping-patience 1000 --lr-reduce-patience 1000 --checkpoint-choice whole
  --training-scale "Reduced CPU training: 1 torch thread on a shared 2-core CPU, 75-minute budget, time-based poly learning rate")
if [ ! -f work/realbg5/stages.json ]; then
  "$PY" - "${ARGS[@]}" <<'PYEOF'
import sys, time
import torch
torch.set_num_threads(1)
from msnode_training.realbg import log, other_pathology_seed, pair_seeds, pair_spacing, parse_args, train_pair_config
from msnode_training.realpairs import RealPairConfig, generate_pairs
config = parse_args(sys.argv[1:])
seeds = pair_seeds(config.seed)
root = config.work_dir / "pairs"
default = RealPairConfig(spacing_zyx=pair_spacing(config))
for split, n, seed, pc, kind in (("validation", config.validation_pairs, seeds["validation"], default, "ms"),
                                 ("test", config.test_pairs, seeds["test"], default, "ms"),
                                 ("pretrain", config.pretrain_pairs, other_pathology_seed(config.seed), default,
                                  "other_pathology"),
                                 ("train", config.train_pairs, seeds["train"], train_pair_config(config), "ms")):
    t = time.monotonic()
    _, record = generate_pairs(root, seed, range(n), pc, config.data_workers, kind)
    log(f"pre-generated pairs {split}: {n} {kind}, key {pc.key()}, {record}, {time.monotonic() - t:.0f} s")
PYEOF
fi
exec "$PY" -m msnode_training.realbg "${ARGS[@]}"
