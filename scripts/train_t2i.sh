#!/bin/sh
# Text-to-image stage: adapt the DiT on images.
# Usage: MODEL_NAME=... DATASET_NAME=... sh scripts/train_t2i.sh [key=value ...]   (see scripts/_train_common.sh)
set -eu
CONFIG=${CONFIG:-config/train_t2i.yaml}
OUTPUT_DIR=${OUTPUT_DIR:-outputs/t2i}
. "$(dirname "$0")/_train_common.sh"
