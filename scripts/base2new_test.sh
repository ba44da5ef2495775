#!/usr/bin/env bash
# Evaluate the base-trained prompts on the novel classes (loads the last epoch of the training run).
#   bash scripts/base2new_test.sh DATASET SEED [KEY VALUE ...]
# Output: $OUTPUT/base2new/test_new/DATASET/shots_$SHOTS/$TRAINER/$CFG/seed$SEED
set -euo pipefail
source "$(dirname "$0")/common.sh"
if [ $# -lt 2 ]; then echo "usage: $0 DATASET SEED [KEY VALUE ...]" >&2; exit 2; fi
DATASET=$1
SEED=$2
shift 2
use_config base2new "${DATASET}"
COMMON_DIR=${DATASET}/shots_${SHOTS}/${TRAINER}/${CFG}/seed${SEED}
MODEL_DIR=${OUTPUT}/base2new/train_base/${COMMON_DIR}
DIR=${OUTPUT}/base2new/test_new/${COMMON_DIR}
if finished "${DIR}"; then exit 0; fi
set_model_args "${MODEL_DIR}" "scripts/base2new_train.sh ${DATASET} ${SEED}"
train_py "${DATASET}" "${SEED}" "${DIR}" "${MODEL_ARGS[@]}" --eval-only \
    DATASET.NUM_SHOTS "${SHOTS}" DATASET.SUBSAMPLE_CLASSES new "$@"
