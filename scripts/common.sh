# Shared settings of the run scripts (sourced, not run). Environment variables:
#   TRAINER  trainer name (default MMLoP)          DATA    data root (default ./data)
#   CFG      config stem under configs/trainers/$TRAINER/ (default: per trainer and protocol)
#   OUTPUT   output root (default output)          SHOTS   shots per class (default 16)
#   PYTHON   interpreter (default python)
# The scripts run from the repository root; trailing KEY VALUE arguments go to train.py.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TRAINER=${TRAINER:-MMLoP}
DATA=${DATA:-./data}
OUTPUT=${OUTPUT:-output}
SHOTS=${SHOTS:-16}
PYTHON=${PYTHON:-python}

# use_config PROTOCOL DATASET: sets TRAINS (1, or 0 for evaluation-only trainers), CFG (default:
# $TRAINER's config for PROTOCOL and DATASET) and CONFIG_FILE from the trainer's own facts
# (python -m trainers.core shell), then checks that the dataset and trainer config files exist.
use_config() {
    local facts
    facts=$("${PYTHON}" -m trainers.core shell "${TRAINER}" "$1" "$2" "${CFG:-}") || exit 2
    eval "${facts}"
    check_inputs "$2"
}

# check_inputs DATASET: the dataset and trainer config files must exist.
check_inputs() {
    if [ ! -f "configs/datasets/$1.yaml" ]; then
        echo "error: configs/datasets/$1.yaml not found (the dataset argument is a file stem" \
             "there, e.g. imagenet, oxford_pets)" >&2
        exit 2
    fi
    if [ ! -f "${CONFIG_FILE}" ]; then
        echo "error: ${CONFIG_FILE} not found (set CFG and TRAINER)" >&2
        exit 2
    fi
}

# finished DIR: a run is finished when its results.json exists (else it is resumed).
finished() {
    if [ -f "$1/results.json" ]; then
        echo "Oops! The results exist at $1 (so skip this job)"
        return 0
    fi
    return 1
}

# is_eval_only: trainers with nothing to train are only evaluated (TRAINS=0, from use_config).
is_eval_only() {
    [ "${TRAINS}" = 0 ]
}

# set_model_args MODEL_DIR HINT: MODEL_ARGS=(--model-dir MODEL_DIR --load-epoch <the last epoch of
# the training run in MODEL_DIR>), read from the run itself (scripts/trained_epoch.py), so any
# training overrides are honoured; a missing or unfinished run stops with the command to run
# (HINT). Empty for evaluation-only trainers.
set_model_args() {
    MODEL_ARGS=()
    if is_eval_only; then return 0; fi
    local epoch
    epoch=$("${PYTHON}" scripts/trained_epoch.py "$1" "$2") || exit 2
    MODEL_ARGS=(--model-dir "$1" --load-epoch "${epoch}")
}

# train_py DATASET SEED DIR [ARGS ...]: train.py for $TRAINER with $CONFIG_FILE
# on configs/datasets/DATASET.yaml, output DIR, --seed SEED (none when SEED is empty); ARGS are
# further flags, then KEY VALUE opts.
train_py() {
    local dataset=$1 seed=$2 dir=$3
    shift 3
    local seed_args=()
    if [ -n "${seed}" ]; then seed_args=(--seed "${seed}"); fi
    "${PYTHON}" train.py --root "${DATA}" "${seed_args[@]}" --trainer "${TRAINER}" \
        --dataset-config-file "configs/datasets/${dataset}.yaml" \
        --config-file "${CONFIG_FILE}" \
        --output-dir "${dir}" "$@"
}

# run_train DATASET SEED DIR [KEY VALUE ...]: train_py; eval-only trainers get --eval-only.
run_train() {
    if is_eval_only; then
        train_py "$1" "$2" "$3" --eval-only "${@:4}"
    else
        train_py "$@"
    fi
}
