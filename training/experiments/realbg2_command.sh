#!/bin/bash
# Resumable: rerun this same script to continue from stages.json / checkpoint_latest.pth.
cd /work/wt-model2/training
export PYTHONPATH=/work/wt-model2/training/src OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nnUNet_n_proc_DA=1 MSNODE_DATA_WORKERS=1
exec /work/main/.venv/bin/python -m msnode_training.realbg --work /work/scratch-model2/realbg2 \
  --out /work/scratch-model2/realbg2/export --name msnode-realbg --version 0.2.0 --threads 1 --workers 1 \
  --budget-minutes 75 --training-share 0.75 --pretrain-share 0.2 \
  --train-pairs 96 --validation-pairs 10 --test-pairs 8 \
  --pretrain-epochs 200 --finetune-epochs 200 --iterations 50 --f1-every 8 \
  --lr-schedule time --validation-mode crops --crop-background-boxes 2 \
  --early-stopping-patience 1000 --lr-reduce-patience 1000 \
  --training-scale "Reduced CPU training: 1 torch thread on a shared 2-core CPU, 75-minute budget, time-based poly learning rate"
