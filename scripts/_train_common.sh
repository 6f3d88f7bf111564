# Shared body of train_t2i.sh / train_t2v.sh / train_lora.sh (sourced, not run). Upstream's variables:
#   MODEL_NAME          pipeline folder with vae/, text_encoder/, tokenizer/ (+ transformer/)
#   DATASET_NAME        dataset root
#   DATASET_META_NAME   metadata file (default: $DATASET_NAME/metadata.json)
#   train_data_format   normal | webvid | diffusers
#   OUTPUT_DIR, CONFIG  where the run goes, which YAML (each script sets its own default)
#   LAUNCH              launcher (default: accelerate launch; e.g. "accelerate launch --multi_gpu")
# Extra arguments are key=value overrides. Re-running resumes from the latest checkpoint.
MODEL_NAME=${MODEL_NAME:-models/Diffusion_Transformer/EasyAnimate-demo}
DATASET_NAME=${DATASET_NAME:-datasets/demo}
DATASET_META_NAME=${DATASET_META_NAME:-$DATASET_NAME/metadata.json}
train_data_format=${train_data_format:-normal}
LAUNCH=${LAUNCH:-accelerate launch}
$LAUNCH scripts/train.py --config "$CONFIG" model.pipeline="$MODEL_NAME" data.root="$DATASET_NAME" \
    data.meta="$DATASET_META_NAME" data.format="$train_data_format" output_dir="$OUTPUT_DIR" \
    checkpointing.resume_from=latest "$@"
