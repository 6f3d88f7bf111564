#!/bin/sh
# LoRA on the spatial attention, from images and/or videos.
# Usage: MODEL_NAME=... DATASET_NAME=... sh scripts/train_lora.sh [key=value ...]   (see scripts/_train_common.sh)
set -eu
CONFIG=${CONFIG:-config/train_lora.yaml}
OUTPUT_DIR=${OUTPUT_DIR:-outputs/lora}
. "$(dirname "$0")/_train_common.sh"
