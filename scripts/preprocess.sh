#!/bin/sh
# Raw videos -> training dataset (normal format). INPUT, OUTPUT, CONFIG from the environment; extra key=value
# arguments override the YAML. Re-running resumes where the last run stopped.
set -eu
INPUT=${INPUT:-raw_videos}
OUTPUT=${OUTPUT:-datasets/mydata}
CONFIG=${CONFIG:-config/preprocess.yaml}
python -m easyanimate.preprocess --input "$INPUT" --output "$OUTPUT" --config "$CONFIG" "$@"
