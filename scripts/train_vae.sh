#!/bin/sh
# Slice VAE training, both stages. Variables (override from the environment):
#   DATA_ROOT   folder of videos and/or images        (default datasets/demo)
#   DATA_ROOT2  stage-2 data                          (default DATA_ROOT)
#   OUTPUT_DIR  where checkpoints and the VAE go       (default outputs/vae)
#   CONFIG      stage-1 YAML                           (default config/vae/tiny_stage1.yaml)
#   CONFIG2     stage-2 YAML                           (default config/vae/tiny_stage2.yaml)
#   STAGE2      1: run the decoder-only stage 2 too; 0: stage 1 only  (default 1)
# Extra arguments are key=value overrides for both stages, e.g. max_steps=100.
set -eu
DATA_ROOT=${DATA_ROOT:-datasets/demo}
DATA_ROOT2=${DATA_ROOT2:-$DATA_ROOT}
OUTPUT_DIR=${OUTPUT_DIR:-outputs/vae}
CONFIG=${CONFIG:-config/vae/tiny_stage1.yaml}
CONFIG2=${CONFIG2:-config/vae/tiny_stage2.yaml}
LAUNCH=${LAUNCH:-accelerate launch}
STAGE2=${STAGE2:-1}

$LAUNCH scripts/train_vae.py --config "$CONFIG" data.root="$DATA_ROOT" output_dir="$OUTPUT_DIR/stage1" \
    resume_from_checkpoint=latest "$@"
[ "$STAGE2" = 1 ] || exit 0
$LAUNCH scripts/train_vae.py --config "$CONFIG2" data.root="$DATA_ROOT2" output_dir="$OUTPUT_DIR/stage2" \
    model="$OUTPUT_DIR/stage1/vae" resume_from_checkpoint=latest "$@"
