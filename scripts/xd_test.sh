#!/usr/bin/env bash
# Evaluate the prompts trained by xd_train.sh on the full test set of DATASET (all classes).
#   bash scripts/xd_test.sh DATASET SEED [KEY VALUE ...]
# Output: $OUTPUT/evaluation/$TRAINER/${CFG}_${SHOTS}shots/DATASET/seed$SEED
set -euo pipefail
source "$(dirname "$0")/common.sh"
if [ $# -lt 2 ]; then echo "usage: $0 DATASET SEED [KEY VALUE ...]" >&2; exit 2; fi
DATASET=$1
SEED=$2
shift 2
SOURCE=${SOURCE:-imagenet}
CFG=${CFG:-$(default_cfg xd)}
check_inputs "${DATASET}"
MODEL_DIR=${OUTPUT}/${SOURCE}/${TRAINER}/${CFG}_${SHOTS}shots/seed${SEED}
DIR=${OUTPUT}/evaluation/${TRAINER}/${CFG}_${SHOTS}shots/${DATASET}/seed${SEED}
if finished "${DIR}"; then exit 0; fi
LOAD=()
if ! is_eval_only; then
    require_model "${MODEL_DIR}" "scripts/xd_train.sh ${SEED}"
    LOAD=(--model-dir "${MODEL_DIR}" --load-epoch "$(load_epoch "$@")")
fi
"${PYTHON}" train.py --root "${DATA}" --seed "${SEED}" --trainer "${TRAINER}" \
    --dataset-config-file "configs/datasets/${DATASET}.yaml" \
    --config-file "configs/trainers/${TRAINER}/${CFG}.yaml" \
    --output-dir "${DIR}" "${LOAD[@]}" --eval-only "$@"
