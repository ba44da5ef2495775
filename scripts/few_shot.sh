#!/usr/bin/env bash
# Few-shot learning on all classes: train with SHOTS (default 16) shots, then test.
#   bash scripts/few_shot.sh DATASET SEED [SHOTS] [KEY VALUE ...]
# Output: $OUTPUT/DATASET/$TRAINER/${CFG}_${SHOTS}shots/seed$SEED
set -euo pipefail
source "$(dirname "$0")/common.sh"
if [ $# -lt 2 ]; then echo "usage: $0 DATASET SEED [SHOTS] [KEY VALUE ...]" >&2; exit 2; fi
DATASET=$1
SEED=$2
shift 2
if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then SHOTS=$1; shift; fi
use_config few_shot "${DATASET}"
DIR=${OUTPUT}/${DATASET}/${TRAINER}/${CFG}_${SHOTS}shots/seed${SEED}
if finished "${DIR}"; then exit 0; fi
run_train "${DATASET}" "${SEED}" "${DIR}" DATASET.NUM_SHOTS "${SHOTS}" "$@"
