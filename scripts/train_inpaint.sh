#!/bin/sh
# Image-to-video (InP): widen a t2v DiT's input to 2C + 1 and train it on masked videos.
# Usage: MODEL_NAME=... DATASET_NAME=... sh scripts/train_inpaint.sh [key=value ...]   (see scripts/_train_common.sh)
set -eu
CONFIG=${CONFIG:-config/train_inpaint.yaml}
OUTPUT_DIR=${OUTPUT_DIR:-outputs/inpaint}
. "$(dirname "$0")/_train_common.sh"
