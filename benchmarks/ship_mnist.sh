#!/usr/bin/env bash
# How models/mnist was produced (CPU, 2 cores shared with other jobs; see the manifest's
# training_run for the measured time). Resumable: rerun to continue an interrupted training.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/mnist-semi5-frozen}
STEPS=${STEPS:-5000}

# Semi-supervised: 5% of the training labels supervise h (000 sec. 4.5); the mode loss shapes g through
# a frozen h (h_mode_start=-1) so that g's mode k is pulled onto digit k; lr_d 2e-4; EMA of g and h.
nemgan train --dataset mnist --out "$RUN" --steps "$STEPS" --labeled-fraction 0.05 --no-progress --resume \
  --set lr_d=2e-4 --set h_mode_start=-1 --set threads=1 \
  --set eval_every=500 --set sample_every=1000 --set ckpt_every=500 --set log_every=250

# Test-set figures (Hungarian ACC / NMI / ARI / purity of h, per-mode generation purity, FCD) -> manifest.
nemgan eval "$RUN" --metrics cluster,gen_purity,fcd --out "$RUN/eval.json"
nemgan export "$RUN" models/mnist --name mnist --version 1 --metrics "$RUN/eval.json" --force \
  --supervision "semi-supervised: 5% of the MNIST training labels supervise h"
python benchmarks/evaluate_model.py models/mnist --metrics cluster
