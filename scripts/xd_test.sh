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
use_config xd "${SOURCE}"     # the config of the training run, for every target
check_inputs "${DATASET}"
MODEL_DIR=${OUTPUT}/${SOURCE}/${TRAINER}/${CFG}_${SHOTS}shots/seed${SEED}
DIR=${OUTPUT}/evaluation/${TRAINER}/${CFG}_${SHOTS}shots/${DATASET}/seed${SEED}
if finished "${DIR}"; then exit 0; fi
set_model_args "${MODEL_DIR}" "scripts/xd_train.sh ${SEED}"
train_py "${DATASET}" "${SEED}" "${DIR}" "${MODEL_ARGS[@]}" --eval-only "$@"
