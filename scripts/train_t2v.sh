#!/bin/sh
# Text-to-video: train the motion modules (stage 2 by default; t2v_stage=3 for the whole DiT).
# Usage: MODEL_NAME=... DATASET_NAME=... sh scripts/train_t2v.sh [key=value ...]   (see scripts/_train_common.sh)
set -eu
CONFIG=${CONFIG:-config/train_t2v.yaml}
OUTPUT_DIR=${OUTPUT_DIR:-outputs/t2v}
. "$(dirname "$0")/_train_common.sh"
