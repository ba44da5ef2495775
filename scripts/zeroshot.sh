#!/usr/bin/env bash
# Zero-shot CLIP on the full test set of DATASET (no training).
#   bash scripts/zeroshot.sh DATASET [KEY VALUE ...]
# CFG (default vit_b16) is a stem of configs/trainers/ZeroshotCLIP/ (vit_b16_ensemble: the
# 60-template ensemble). Output: $OUTPUT/ZeroshotCLIP/$CFG/DATASET
set -euo pipefail
TRAINER=ZeroshotCLIP
source "$(dirname "$0")/common.sh"
if [ $# -lt 1 ]; then echo "usage: $0 DATASET [KEY VALUE ...]" >&2; exit 2; fi
DATASET=$1
shift
use_config zeroshot "${DATASET}"
DIR=${OUTPUT}/ZeroshotCLIP/${CFG}/${DATASET}
if finished "${DIR}"; then exit 0; fi
train_py "${DATASET}" "" "${DIR}" --eval-only "$@"
