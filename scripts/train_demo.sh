#!/usr/bin/env bash
# Train the embedded demo model end to end with our normal scripts and configs (config/demo/), then evaluate
# it and export fp16 weights under models/. About 80 minutes on 2 CPU cores; re-running resumes each stage.
#
#   bash scripts/train_demo.sh            # everything
#   EXPORT=0 bash scripts/train_demo.sh   # train and evaluate, leave models/ alone
#
# Variables: OUT (work folder, default outputs/demo), DATA / STYLE_DATA (datasets), PYRAMID (1: also train and
# evaluate EasyAnimate-demo-pyramid, Pyramid Flow's two pyramids, from the same t2i weights; PYRAMID_BOUNDARY: where
# its motion-word expert hands over, default 0.75), LAUNCH (default python;
# "accelerate launch" on GPU machines), EXPORT (1: write models/), GUIDANCE (the evaluation's CFG scale, default 4:
# the model's recommended one, see its card), EVAL_ARGS (extra arguments for the evaluation),
# ARGS (key=value overrides for every DiT stage, e.g. ARGS="optimization.max_steps=2" for a smoke run),
# VAE_ARGS (the same for the VAE stage, e.g. VAE_ARGS="max_steps=2").
set -euo pipefail
OUT=${OUT:-outputs/demo}
DATA=${DATA:-datasets/demo}
STYLE_DATA=${STYLE_DATA:-datasets/demo_outline}
MOTION_DATA=${MOTION_DATA:-datasets/demo_balanced}
VAE_DATA=${VAE_DATA:-datasets/demo_vae}
IMAGE_DATA=${IMAGE_DATA:-datasets/demo_images}
LAUNCH=${LAUNCH:-python}
EXPORT=${EXPORT:-1}
PYRAMID=${PYRAMID:-0}
EVAL_ARGS=${EVAL_ARGS:-}
GUIDANCE=${GUIDANCE:-4}
ARGS=${ARGS:-}
VAE_ARGS=${VAE_ARGS:-}
PY=${PY:-python}
mkdir -p "$OUT"
TIMES="$OUT/stage_seconds.tsv"

stage() {  # stage NAME COMMAND...: run it and record how long it took
    local name=$1 start=$SECONDS
    shift
    echo "== $name"
    "$@"
    printf '%s\t%s\n' "$name" $((SECONDS - start)) >>"$TIMES"
}

# 1. data: coloured shapes moving on plain backgrounds; crowds of them for the VAE; 3,000 still images for
#    text-to-image; the same shapes balanced (every look in every direction) for the motion-word stage; a small
#    folder of outlined shapes (the LoRA style)
data() {
    [ -f "$VAE_DATA/metadata.json" ] ||
        $PY -m easyanimate.data.synthetic --output "$VAE_DATA" --num-videos 300 --num-images 600 --seed 2 \
            --crowd 6
    [ -f "$DATA/metadata.json" ] ||
        $PY -m easyanimate.data.synthetic --output "$DATA" --num-videos 600 --num-images 300 --seed 0
    [ -f "$IMAGE_DATA/metadata.json" ] ||
        $PY -m easyanimate.data.synthetic --output "$IMAGE_DATA" --num-videos 0 --num-images 3000 --seed 3
    [ -f "$MOTION_DATA/metadata.json" ] ||
        $PY -m easyanimate.data.synthetic --output "$MOTION_DATA" --num-videos 540 --num-images 300 --seed 0 \
            --balanced
    [ -f "$STYLE_DATA/metadata.json" ] ||
        $PY -m easyanimate.data.synthetic --output "$STYLE_DATA" --num-videos 0 --num-images 120 --seed 1 \
            --style outline
}
stage data data

# 2. Slice VAE (encoder + decoder, on crowds). A decoder-only second stage on the demo clips
#    (config/demo/vae_stage2.yaml, not run) rounded corners: the shapes analyzer reads 78% of the shapes in its
#    reconstructions of new clips against 93% for this stage alone
# shellcheck disable=SC2086
stage vae env DATA_ROOT="$VAE_DATA" OUTPUT_DIR="$OUT/vae" CONFIG=config/demo/vae_stage1.yaml STAGE2=0 \
    LAUNCH="$LAUNCH" sh scripts/train_vae.sh $VAE_ARGS

# 3. base pipeline: the VAE (scaled to unit-variance latents) + a tiny T5 whose vocabulary is learnt from the
#    captions, frozen at its random init
stage base $PY scripts/make_base_pipeline.py --vae "$OUT/vae/stage1/vae" --captions "$DATA/metadata.json" \
    --scale-from "$DATA" --output "$OUT/base"

# 4. text-to-image, 5. text-to-video (whole DiT with motion modules), 5b. motion words (balanced data + the
#    caption contrast term on the direction word, config/demo/t2v_motion.yaml), 5c. the two joined as experts,
#    6. image-to-video InP, 7. LoRA.
#    t2i and t2v read VAE latents + text features precomputed once (scripts/precompute.py): the clips are
#    already 64 px and 17 frames, so the cache's centre crops are the clips themselves. A cache depends on the
#    data and the pipeline's VAE and text encoder, which every stage keeps.
cache() {  # cache CONFIG PIPELINE DIR [DATA]: precompute once
    local data=${4:-$DATA}
    [ -f "$3/manifest.json" ] || $PY scripts/precompute.py --config "$1" model.pipeline="$2" data.root="$data" \
        data.meta="$data/metadata.json" data.latent_cache="$3"
}
# shellcheck disable=SC2086
common=(DATASET_NAME="$DATA" LAUNCH="$LAUNCH")
stage cache_t2i cache config/demo/t2i.yaml "$OUT/base" "$OUT/cache/t2i" "$IMAGE_DATA"
stage t2i env DATASET_NAME="$IMAGE_DATA" LAUNCH="$LAUNCH" MODEL_NAME="$OUT/base" OUTPUT_DIR="$OUT/t2i" \
    CONFIG=config/demo/t2i.yaml sh scripts/train_t2i.sh data.latent_cache="$OUT/cache/t2i" $ARGS
stage cache_t2v cache config/demo/t2v.yaml "$OUT/t2i/pipeline" "$OUT/cache/t2v"
stage t2v env "${common[@]}" MODEL_NAME="$OUT/t2i/pipeline" OUTPUT_DIR="$OUT/t2v" CONFIG=config/demo/t2v.yaml \
    sh scripts/train_t2v.sh data.latent_cache="$OUT/cache/t2v" $ARGS
stage cache_motion cache config/demo/t2v_motion.yaml "$OUT/t2v/pipeline" "$OUT/cache/motion" "$MOTION_DATA"
stage t2v_motion env DATASET_NAME="$MOTION_DATA" LAUNCH="$LAUNCH" MODEL_NAME="$OUT/t2v/pipeline" \
    OUTPUT_DIR="$OUT/t2v_motion" CONFIG=config/demo/t2v_motion.yaml sh scripts/train_t2v.sh \
    data.latent_cache="$OUT/cache/motion" $ARGS
# 5c. two experts split by noise level (Wan 2.2's layout): the motion-word weights denoise the high-noise steps
#     (noise >= 0.95, where layout and direction are decided), the text-to-video weights the rest (shape and
#     colour, which the motion-word stage erases whatever its settings). 100 held-out pairs, colour / shape /
#     direction: boundary 0.9 87 / 74 / 96%, 0.95 93 / 72 / 93%, 0.97 92 / 70 / 87%; the motion-word weights
#     alone (40 pairs) 80 / 30 / 100%, the t2v weights alone 97.5 / 52.5 / 10%
stage experts $PY scripts/make_experts.py --high "$OUT/t2v_motion/pipeline" --low "$OUT/t2v/pipeline" \
    --boundary 0.95 --output "$OUT/experts"
stage inpaint env "${common[@]}" MODEL_NAME="$OUT/t2v_motion/pipeline" OUTPUT_DIR="$OUT/inpaint" \
    CONFIG=config/demo/inpaint.yaml sh scripts/train_inpaint.sh $ARGS
# the LoRA learns the style on the t2v weights (the low-noise expert, which draws shapes); loading puts it into both
stage lora env DATASET_NAME="$STYLE_DATA" LAUNCH="$LAUNCH" MODEL_NAME="$OUT/t2v/pipeline" \
    OUTPUT_DIR="$OUT/lora" CONFIG=config/demo/lora.yaml sh scripts/train_lora.sh $ARGS

# 8. evaluation on prompts x seeds not used in training (results in $OUT/eval/results.json), at CFG 4: with two
#    experts CFG 6 draws purple as blue more often (colour 89% / 90% on two sets of 100 pairs, CFG 4: 92% / 91%)
# shellcheck disable=SC2086
stage eval $PY -m easyanimate.eval demo --model "$OUT/experts" --inpaint-model "$OUT/inpaint/pipeline" \
    --lora "$OUT/lora/lora.safetensors" --train-metadata "$DATA/metadata.json" \
    --output "$OUT/eval" --num-prompts 100 --num-i2v 30 --num-lora 20 --guidance-scale "$GUIDANCE" $EVAL_ARGS

# 8b. Pyramid Flow beside it (PYRAMID=1): the same data, t2i weights and stages as the plain model, with both
#     pyramids: t2v (config/demo/t2v_pyramid.yaml), motion words at the coarse stage only
#     (config/demo/t2v_motion_pyramid.yaml), the t2v weights trained on whole clips, mostly at the full-size stage
#     (config/demo/t2v_pyramid_fine.yaml), the last two joined as experts, evaluated the same way
if [ "$PYRAMID" = 1 ]; then
    stage t2v_pyramid env "${common[@]}" MODEL_NAME="$OUT/t2i/pipeline" OUTPUT_DIR="$OUT/t2v_pyramid" \
        CONFIG=config/demo/t2v_pyramid.yaml sh scripts/train_t2v.sh data.latent_cache="$OUT/cache/t2v" $ARGS
    stage t2v_motion_pyramid env DATASET_NAME="$MOTION_DATA" LAUNCH="$LAUNCH" \
        MODEL_NAME="$OUT/t2v_pyramid/pipeline" OUTPUT_DIR="$OUT/t2v_motion_pyramid" \
        CONFIG=config/demo/t2v_motion_pyramid.yaml sh scripts/train_t2v.sh data.latent_cache="$OUT/cache/motion" \
        $ARGS
    stage t2v_pyramid_fine env "${common[@]}" MODEL_NAME="$OUT/t2v_pyramid/pipeline" \
        OUTPUT_DIR="$OUT/t2v_pyramid_fine" CONFIG=config/demo/t2v_pyramid_fine.yaml sh scripts/train_t2v.sh \
        data.latent_cache="$OUT/cache/t2v" $ARGS
    # the motion-word weights for noise >= 0.75 (9 of the coarse stage's 17 steps), the whole-clip weights below.
    # 100 held-out pairs, colour / shape / direction: boundary 0.75 94 / 70 / 91%, 0.7 92 / 68 / 90%, 0.65 94 /
    # 66 / 89%; the t2v weights instead of the whole-clip ones at 0.7: 90 / 49 / 85%
    stage experts_pyramid $PY scripts/make_experts.py --high "$OUT/t2v_motion_pyramid/pipeline" \
        --low "$OUT/t2v_pyramid_fine/pipeline" --boundary "${PYRAMID_BOUNDARY:-0.75}" \
        --output "$OUT/experts_pyramid"
    # image-to-video from the model itself (a start image is latent frame 0), 20 videos at twice the length
    # shellcheck disable=SC2086
    stage eval_pyramid $PY -m easyanimate.eval demo --model "$OUT/experts_pyramid" \
        --inpaint-model "$OUT/experts_pyramid" --train-metadata "$DATA/metadata.json" --output "$OUT/eval_pyramid" \
        --num-prompts 100 --num-i2v 30 --num-lora 0 --num-long 20 --guidance-scale "$GUIDANCE" $EVAL_ARGS
fi

# 9. export fp16 weights where the CLIs and the web UI look for them
if [ "$EXPORT" = 1 ]; then
    demo=models/Diffusion_Transformer/EasyAnimate-demo  # the export rewrites the folder: keep the card and plots
    mkdir -p "$OUT/model_card"
    for f in "$demo"/README.md "$demo"/*.png; do [ ! -f "$f" ] || cp "$f" "$OUT/model_card/"; done
    $PY scripts/convert_fp16.py "$OUT/experts" "$demo"
    $PY scripts/convert_fp16.py "$OUT/inpaint/pipeline" models/Diffusion_Transformer/EasyAnimate-demo-InP
    $PY scripts/convert_fp16.py "$OUT/t2v_motion/motion_module" models/Motion_Module/EasyAnimate-demo-motion
    $PY scripts/convert_fp16.py "$OUT/lora/lora.safetensors" models/Personalized_Model/demo-outline-lora.safetensors
    cp "$OUT/eval/results.json" "$demo/eval_results.json"
    if [ "$PYRAMID" = 1 ]; then
        pcard=models/Diffusion_Transformer/EasyAnimate-demo-pyramid/README.md
        [ ! -f "$pcard" ] || cp "$pcard" "$OUT/pyramid_card.md"
        $PY scripts/convert_fp16.py "$OUT/experts_pyramid" models/Diffusion_Transformer/EasyAnimate-demo-pyramid
        cp "$OUT/eval_pyramid/results.json" models/Diffusion_Transformer/EasyAnimate-demo-pyramid/eval_results.json
        [ ! -f "$OUT/pyramid_card.md" ] || cp "$OUT/pyramid_card.md" "$pcard"
    fi
    for f in "$OUT"/model_card/*; do [ ! -f "$f" ] || cp "$f" "$demo/"; done
fi
echo "stage times (s):"
cat "$TIMES"
