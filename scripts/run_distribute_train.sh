#!/usr/bin/env bash
# Data-parallel training on DEVICE_NUM devices of this machine (CPU processes, GPUs or Ascend NPUs).
#   bash scripts/run_distribute_train.sh [DEVICE_NUM] [CONFIG] [key=value overrides...] [--restart]
#   RANK_TABLE_FILE=/path/hccl_8p.json bash scripts/run_distribute_train.sh 8 [CONFIG] [overrides...]
#   bash scripts/run_distribute_train.sh 8 True /path/hccl_8p.json [CONFIG] [overrides...]   (ModelZoo form)
# DEVICE_NUM defaults to 8, CONFIG to configs/swave_librimix.yaml. train.batch_size is the GLOBAL
# batch: each worker takes batch_size / DEVICE_NUM rows per step (it must divide evenly).
# Without a rank table the workers are started by msrun (dynamic cluster: works on CPU, GPU and
# Ascend); with one (Ascend, HCCL) one process per device gets RANK_ID, DEVICE_ID (from the table)
# and RANK_SIZE. Runs in the foreground (use nohup/tmux to detach) and returns 0 when every worker
# finished. If a worker fails, the others are stopped, the failing worker's last lines are printed
# and the exit status is 1. Logs: <experiment_dir>/distribute_logs/worker_<rank>.log, and all of
# them labelled "[worker N]" in <experiment_dir>/train_distribute.log. Re-running resumes from the
# latest checkpoint. Relative paths inside the config and the overrides are relative to the
# repository root (the workers run there); CONFIG may also be relative to the current directory.
# MASTER_PORT sets msrun's port (default: a free one); TRAIN_SCRIPT replaces
# train.py by another entry taking the same arguments (the tests use tests/training/distributed_worker.py).
set -uo pipefail
CALLER_DIR="$PWD"
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/env.sh"
cd "$ROOT"

die() { echo "error: $*" >&2; exit 2; }
abspath() { case "$1" in /*) echo "$1" ;; *) if [ -e "$CALLER_DIR/$1" ]; then echo "$CALLER_DIR/$1"; else echo "$ROOT/$1"; fi ;; esac; }

DEVICE_NUM="${1:-8}"
[ $# -gt 0 ] && shift
[[ "$DEVICE_NUM" =~ ^[1-9][0-9]*$ ]] || die "DEVICE_NUM must be a positive integer, got '$DEVICE_NUM'"
if [[ "${1:-}" =~ ^(true|True|TRUE|false|False|FALSE)$ ]]; then          # ModelZoo: DEVICE_NUM DISTRIBUTE RANK_TABLE_FILE
  [[ "$1" =~ ^(true|True|TRUE)$ ]] || die "DISTRIBUTE=$1: for one device use scripts/run_standalone_train.sh"
  [ $# -ge 2 ] || die "the ModelZoo form needs a rank table: run_distribute_train.sh $DEVICE_NUM $1 /path/hccl_${DEVICE_NUM}p.json"
  RANK_TABLE_FILE="$2"
  shift 2
fi
CONFIG="configs/swave_librimix.yaml"
if [ $# -gt 0 ] && [[ "$1" != *=* && "$1" != --* ]]; then CONFIG="$1"; shift; fi
CONFIG="$(abspath "$CONFIG")"
[ -f "$CONFIG" ] || die "config not found: $CONFIG"
TRAIN_ARGS=(-c "$CONFIG" "$@")
OVERRIDES=()
for arg in "$@"; do [[ "$arg" == --* ]] || OVERRIDES+=("$arg"); done
TRAIN_SCRIPT="$(abspath "${TRAIN_SCRIPT:-$ROOT/train.py}")"
RANK_TABLE="${RANK_TABLE_FILE:-}"
[ -z "$RANK_TABLE" ] || RANK_TABLE="$(abspath "$RANK_TABLE")"

# Check what the workers would only find out after the cluster is built (config, global batch,
# rank table; the device only with a rank table: importing MindSpore takes seconds).
# Prints experiment_dir and the device ids in rank order.
PREFLIGHT='
import json, sys
from src.config import ConfigError, load_config
workers, table_path, config, overrides = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
try:
    cfg = load_config(config, overrides)
except ConfigError as err:
    sys.exit(f"error: {err}")
batch = cfg.train.batch_size
if batch % workers:
    sys.exit(f"error: train.batch_size={batch} is the global batch and must be divisible by DEVICE_NUM={workers} "
             f"(e.g. train.batch_size={workers * max(1, round(batch / workers))})")
device_ids = list(range(workers))
if table_path:
    try:
        with open(table_path, encoding="utf-8") as f:
            servers = json.load(f)["server_list"]
        if len(servers) != 1:
            sys.exit(f"error: {table_path}: lists {len(servers)} servers; this script starts the workers of one "
                     "server (start multi-server jobs with msrun on every server)")
        devices = sorted(servers[0]["device"], key=lambda d: int(d["rank_id"]))
        device_ids = [int(d["device_id"]) for d in devices]
    except (OSError, ValueError, KeyError, TypeError) as err:
        sys.exit(f"error: {table_path}: not a readable HCCL rank table (version 1.0 with server_list): {err!r}")
    if len(device_ids) != workers:
        sys.exit(f"error: {table_path}: has {len(device_ids)} devices but DEVICE_NUM={workers}")
    from src.runtime.device import best_device
    try:
        device = best_device(cfg.device_target)
    except ConfigError as err:
        sys.exit(f"error: {err}")
    if device != "Ascend":
        sys.exit(f"error: a rank table (RANK_TABLE_FILE={table_path}) is for Ascend (HCCL) but the device is "
                 f"{device}; unset RANK_TABLE_FILE to start the workers with msrun")
print(cfg.experiment_dir)
print(" ".join(map(str, device_ids)))
'
PREFLIGHT_OUT="$(python -c "$PREFLIGHT" "$DEVICE_NUM" "$RANK_TABLE" "$CONFIG" "${OVERRIDES[@]}")" || exit 2
{ read -r EXP_DIR; read -r -a DEVICE_IDS; } <<< "$PREFLIGHT_OUT"
[[ "$EXP_DIR" == /* ]] || EXP_DIR="$ROOT/$EXP_DIR"
LOG_DIR="$EXP_DIR/distribute_logs"
COMBINED="$EXP_DIR/train_distribute.log"
rm -f "$LOG_DIR"/worker_*.log "$LOG_DIR"/scheduler.log "$LOG_DIR"/msrun.log
mkdir -p "$LOG_DIR"
: > "$COMBINED"

say() { echo "$*" | tee -a "$COMBINED"; }
FOLLOWERS=()
follow() {  # follow FILE LABEL PID: FILE's lines (tqdm's \r updates too, no [INFO]), labelled, to the combined log and stdout
  tail -n +1 -F -s 0.5 --pid="$3" "$1" 2>/dev/null | stdbuf -o0 tr '\r' '\n' \
    | sed -u -e '/^[[:space:]]*$/d' -e '/^\[INFO\] /d' -e "s/^/[$2] /" | tee -a "$COMBINED" &
  FOLLOWERS+=($!)
}

JOB_PIDS=()
STOP_SIGNAL=INT   # msrun stops its scheduler and workers on SIGINT; rank-table workers get SIGTERM
stop_job() {  # stop every process of the job: STOP_SIGNAL, then SIGKILL after 10 s
  local pid children=()
  for pid in "${JOB_PIDS[@]}"; do children+=($(pgrep -P "$pid")); kill -"$STOP_SIGNAL" "$pid" 2>/dev/null; done
  for _ in $(seq 20); do
    local alive=0
    for pid in "${JOB_PIDS[@]}" "${children[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.5
  done
  for pid in "${children[@]}" "${JOB_PIDS[@]}"; do   # workers are process-group leaders (setsid)
    kill -0 "$pid" 2>/dev/null && { kill -KILL -- "-$pid" 2>/dev/null; kill -KILL "$pid" 2>/dev/null; }
  done
  for pid in "${JOB_PIDS[@]}"; do wait "$pid" 2>/dev/null; done
}
trap 'say "interrupted: stopping all workers"; stop_job; exit 130' INT TERM

FAILED=0
if [ -z "$RANK_TABLE" ]; then
  PORT="${MASTER_PORT:-$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
  say "starting $DEVICE_NUM worker(s) with msrun (port $PORT); config $CONFIG"
  say "logs: $LOG_DIR/worker_<rank>.log, all of them in $COMBINED"
  # --tail_worker_log=$DEVICE_NUM names no worker: msrun copies no log to its output, follow() does
  setsid msrun --worker_num="$DEVICE_NUM" --local_worker_num="$DEVICE_NUM" --master_port="$PORT" --log_dir="$LOG_DIR" \
    --join=True --tail_worker_log="$DEVICE_NUM" "$TRAIN_SCRIPT" "${TRAIN_ARGS[@]}" --distributed \
    > "$LOG_DIR/msrun.log" 2>&1 &
  JOB_PIDS=($!)
  follow "$LOG_DIR/msrun.log" msrun "${JOB_PIDS[0]}"
  for ((rank = 0; rank < DEVICE_NUM; rank++)); do follow "$LOG_DIR/worker_$rank.log" "worker $rank" "${JOB_PIDS[0]}"; done
  while kill -0 "${JOB_PIDS[0]}" 2>/dev/null; do
    # msrun kills the other workers when one fails, but then waits for its scheduler, which waits
    # for the lost workers (up to cluster_time_out, 600 s, when they failed before init()).
    if grep -q "exit with exception" "$LOG_DIR/msrun.log"; then FAILED=1; stop_job; break; fi
    sleep 1
  done
  wait "${JOB_PIDS[0]}" || FAILED=1
else
  STOP_SIGNAL=TERM  # background jobs of a script ignore SIGINT
  say "starting $DEVICE_NUM worker(s) on Ascend with the rank table $RANK_TABLE (devices ${DEVICE_IDS[*]}); config $CONFIG"
  say "logs: $LOG_DIR/worker_<rank>.log, all of them in $COMBINED"
  for ((rank = 0; rank < DEVICE_NUM; rank++)); do
    RANK_TABLE_FILE="$RANK_TABLE" RANK_SIZE="$DEVICE_NUM" RANK_ID="$rank" DEVICE_ID="${DEVICE_IDS[$rank]}" \
      setsid python "$TRAIN_SCRIPT" "${TRAIN_ARGS[@]}" --distributed > "$LOG_DIR/worker_$rank.log" 2>&1 &
    JOB_PIDS+=($!)
    follow "$LOG_DIR/worker_$rank.log" "worker $rank" "$!"
  done
  RUNNING=("${JOB_PIDS[@]}")
  while [ ${#RUNNING[@]} -gt 0 ] && [ "$FAILED" = 0 ]; do
    STILL=()
    for pid in "${RUNNING[@]}"; do
      if kill -0 "$pid" 2>/dev/null; then STILL+=("$pid"); else wait "$pid" || FAILED=1; fi
    done
    RUNNING=("${STILL[@]}")
    [ "$FAILED" = 1 ] && stop_job
    [ ${#RUNNING[@]} -gt 0 ] && sleep 1
  done
fi
wait "${FOLLOWERS[@]}" 2>/dev/null

if [ "$FAILED" = 0 ]; then
  say "all $DEVICE_NUM worker(s) finished; checkpoints in $EXP_DIR/checkpoints"
  exit 0
fi
CULPRITS=()
for ((rank = 0; rank < DEVICE_NUM; rank++)); do
  log="$LOG_DIR/worker_$rank.log"
  grep -q -E '^Traceback \(most recent call last\)|(^|: )error: |^[A-Za-z_.]*(Error|Exception): ' "$log" 2>/dev/null && CULPRITS+=("$rank")
done
if [ ${#CULPRITS[@]} -eq 0 ]; then
  say "error: the distributed job failed (see $LOG_DIR/msrun.log and $LOG_DIR/worker_*.log); all workers were stopped" >&2
else
  say "error: worker $(IFS=,; echo "${CULPRITS[*]}" | sed 's/,/, /g') failed; the other workers were stopped. Last lines:" >&2
  for rank in "${CULPRITS[@]}"; do
    say "---- $LOG_DIR/worker_$rank.log" >&2
    grep -v -E '^\[(INFO|WARNING)\]' "$LOG_DIR/worker_$rank.log" | tail -n 12 | tee -a "$COMBINED" >&2
  done
fi
exit 1
