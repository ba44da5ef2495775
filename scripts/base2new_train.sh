#!/usr/bin/env bash
# Train on the base classes (16 shots) and test on them.
#   bash scripts/base2new_train.sh DATASET SEED [KEY VALUE ...]
# Output: $OUTPUT/base2new/train_base/DATASET/shots_$SHOTS/$TRAINER/$CFG/seed$SEED
# (see scripts/common.sh for TRAINER, CFG, DATA, OUTPUT, SHOTS). ZeroshotCLIP is only evaluated.
set -euo pipefail
source "$(dirname "$0")/common.sh"
if [ $# -lt 2 ]; then echo "usage: $0 DATASET SEED [KEY VALUE ...]" >&2; exit 2; fi
DATASET=$1
SEED=$2
shift 2
use_config base2new "${DATASET}"
DIR=${OUTPUT}/base2new/train_base/${DATASET}/shots_${SHOTS}/${TRAINER}/${CFG}/seed${SEED}
if finished "${DIR}"; then exit 0; fi
run_train "${DATASET}" "${SEED}" "${DIR}" \
    DATASET.NUM_SHOTS "${SHOTS}" DATASET.SUBSAMPLE_CLASSES base "$@"
