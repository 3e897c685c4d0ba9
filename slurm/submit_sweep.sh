#!/usr/bin/env bash
# Submit a whole prune_lab sweep as one small SLURM job (the "driver"), so it survives logging out.
#
#   slurm/submit_sweep.sh SWEEP_DIR [prune_lab overrides...]
#   slurm/submit_sweep.sh sweeps/init_study init=xavier_normal,kaiming_uniform seed=0,1,2
#   slurm/submit_sweep.sh sweeps/cpu_study hydra/launcher=slurm_cpu device=cpu seed=0,1,2,3,4
#
# The driver runs `python -m prune_lab -m hydra.sweep.dir=SWEEP_DIR ...` on one CPU; Hydra's launcher
# (hydra/launcher=slurm_gpu unless you name another) sends the runs as a job array and waits for them.
# Rerun the same command to resume: finished runs are skipped, interrupted ones resume from checkpoints.
#
# Environment: PRUNE_LAB_PYTHON (interpreter; default: the `python` on PATH, e.g. your activated venv),
# PRUNE_LAB_DRIVER_TIME (driver time limit, default 3-00:00:00; it must outlast the sweep),
# PRUNE_LAB_DRIVER_SBATCH (more sbatch options for the driver, e.g. "--partition=cpu --account=lab").
# sbatch's own SBATCH_* variables (SBATCH_PARTITION, SBATCH_ACCOUNT...) work as usual.
set -euo pipefail

if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
command -v sbatch >/dev/null || { echo "submit_sweep: sbatch not found: run this on a SLURM login node" >&2; exit 1; }

REPO=$(cd "$(dirname "$0")/.." && pwd)
SWEEP=$1; shift
[[ $SWEEP == *=* ]] && { echo "submit_sweep: the first argument is the sweep folder (e.g. sweeps/my_study), got '$SWEEP'" >&2; exit 2; }
mkdir -p "$SWEEP/.driver"
SWEEP=$(cd "$SWEEP" && pwd)

PY=${PRUNE_LAB_PYTHON:-$(command -v python || command -v python3)}
PY=$(command -v "$PY")
"$PY" -c "import prune_lab, submitit" 2>/dev/null \
    || { echo "submit_sweep: $PY cannot import prune_lab and submitit; activate the project's venv or set PRUNE_LAB_PYTHON" >&2; exit 1; }

# One driver per sweep folder: two would run the same runs into the same folders at once.
if [[ -s $SWEEP/.driver/jobid ]]; then
    old=$(cat "$SWEEP/.driver/jobid")
    if squeue -h -j "$old" -o %T 2>/dev/null | grep -q .; then
        echo "submit_sweep: driver job $old of $SWEEP is still queued or running (squeue -j $old);" \
             "wait for it or scancel it first" >&2
        exit 1
    fi
fi

args=(-u -m prune_lab -m "hydra.sweep.dir=$SWEEP")
[[ " $* " == *" hydra/launcher="* ]] || args+=("hydra/launcher=slurm_gpu")
args+=("$@")
printf -v cmd '%q ' "$PY" "${args[@]}"

sbatch_args=(--parsable --job-name=prune_lab_sweep --chdir="$REPO" --output="$SWEEP/.driver/driver-%j.log"
             --ntasks=1 --cpus-per-task=1 --mem=2G --no-requeue)
[[ -n ${SBATCH_TIMELIMIT:-} ]] || sbatch_args+=(--time="${PRUNE_LAB_DRIVER_TIME:-3-00:00:00}")
# shellcheck disable=SC2206  # word splitting of the user's extra options is intended
[[ -n ${PRUNE_LAB_DRIVER_SBATCH:-} ]] && sbatch_args+=(${PRUNE_LAB_DRIVER_SBATCH})

jobid=$(sbatch "${sbatch_args[@]}" --wrap="exec $cmd")
jobid=${jobid%%;*}
echo "$jobid" >"$SWEEP/.driver/jobid"
echo "$cmd" >"$SWEEP/.driver/command"

cat <<EOF
Submitted the sweep driver as SLURM job $jobid; you can log out now.
  command      : $cmd
  driver log   : $SWEEP/.driver/driver-$jobid.log   (the sweep's summary and any failed job with its log)
  run folders  : $SWEEP/<overrides>/results.json
  job logs     : $SWEEP/.submitit/<job id>/<job id>_0_log.out|err
  watch        : squeue -u \$USER    tail -f $SWEEP/.driver/driver-$jobid.log
  stop         : scancel $jobid; then scancel the runs' array (squeue -u \$USER -n prune_lab)
  resume / add : rerun this command (with more values to extend it): finished runs are skipped
EOF
