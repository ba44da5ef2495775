#!/usr/bin/env bash
# Cross-dataset / domain generalization: train on all classes of the source dataset ($SOURCE,
# default imagenet) with $SHOTS shots.
#   bash scripts/xd_train.sh SEED [KEY VALUE ...]
# Output: $OUTPUT/$SOURCE/$TRAINER/${CFG}_${SHOTS}shots/seed$SEED
set -euo pipefail
source "$(dirname "$0")/common.sh"
if [ $# -lt 1 ]; then echo "usage: $0 SEED [KEY VALUE ...]" >&2; exit 2; fi
SEED=$1
shift
SOURCE=${SOURCE:-imagenet}
use_config xd "${SOURCE}"
DIR=${OUTPUT}/${SOURCE}/${TRAINER}/${CFG}_${SHOTS}shots/seed${SEED}
if finished "${DIR}"; then exit 0; fi
run_train "${SOURCE}" "${SEED}" "${DIR}" DATASET.NUM_SHOTS "${SHOTS}" "$@"
