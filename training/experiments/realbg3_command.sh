#!/bin/bash
# realbg 0.3.0 round (issue 19 levers 1-3). Resumable: rerun this same script to continue from stages.json /
# checkpoint_latest.pth. The validation (stream 7) and test (stream 8) pairs are the default generator's, key
# 3b2d1de70d62: the same pairs realbg 0.1.0 / 0.2.0 were scored on. Training pairs: key b3727c6555a6.
cd /work/wt-model3/training
export PYTHONPATH=/work/wt-model3/training/src OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nnUNet_n_proc_DA=1 MSNODE_DATA_WORKERS=1
exec /work/main/.venv/bin/python -m msnode_training.realbg --work work/realbg3 \
  --out work/realbg3/export --name msnode-realbg --version 0.3.0 --threads 1 --workers 1 \
  --budget-minutes 75 --training-share 0.72 --pretrain-share 0.2 \
  --train-pairs 96 --validation-pairs 10 --test-pairs 8 \
  --pretrain-epochs 200 --finetune-epochs 200 --iterations 50 --f1-every 14 \
  --lr-schedule time --validation-mode crops --crop-background-boxes 8 \
  --early-stopping-patience 1000 --lr-reduce-patience 1000 --checkpoint-choice whole \
  --train-new-lesions 2 8 --train-affine-residual 0.01 --train-faint-share 0.25 \
  --training-scale "Reduced CPU training: 1 torch thread on a shared 2-core CPU, 75-minute budget, time-based poly learning rate"
