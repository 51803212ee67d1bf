#!/usr/bin/env bash
# The compute-frontier comparisons (issue 30): every setting of `gym-qwen evaluate mode=all` on the same 30
# episodes of each shipped teacher, one torch thread per task, in the background and resumable: each finished
# episode is a line of docs/frontier/<task>.episodes.jsonl, and `start` continues from there (resume=true), so a
# killed or paused run loses at most the episodes in flight. Returns and counts do not depend on the machine's
# load; milliseconds do, so ms per step comes from a separate quiet run (BENCHMARKS.md, "Compute frontier").
#   scripts/frontier.sh start      start or resume every task in TASKS
#   scripts/frontier.sh status     running or not, settings and episodes logged
#   scripts/frontier.sh pause|continue   SIGSTOP / SIGCONT (while timing or running the test suite)
#   scripts/frontier.sh extras     the extra settings (the cheap planner with its own corrector), 30 episodes each
#   scripts/frontier.sh k3-dagger  a two-tower distilled for k = 3 on DAgger chunks of 3, then 30 episodes with it
#   scripts/frontier.sh timing     ms per step of every setting: TIMING_EPISODES (1) episodes each, both tasks at
#                                  once on an otherwise idle machine (pause everything else first)
#   scripts/frontier.sh pipeline   a new task, from its shipped teacher (scripts/teachers.sh ship) to its frontier, in
#                                  the background (one thread per task, resumable: run it again after a kill):
#                                  the calibration collection (open loop, k = 6, 16 episodes, seed 1; also the
#                                  correctors' open-loop data), slimmed into docs/frontier/; open-loop temporal
#                                  corrector (runs/correctors/); DAgger collection executing it (12 episodes, seed
#                                  2); the shipped two-tower and temporal distilled on both (150 epochs, label=mean);
#                                  then `start` (mode=all, 30 episodes) and `extras`. Log: logs/frontier-pipeline-<task>.log
# The adaptive rows' mismatch threshold is chosen by evaluate's threshold_data= rule (budget 0.33 planner calls per
# step) on collection episodes never evaluated, made by
#   gym-qwen collect checkpoint=models/<task>-size1-seed1.pt episodes=16 seed=1 spec_exec_horizon=6 \
#     output=data/<task>-calibration.parquet torch_threads=1
# and shipped slimmed to the columns the rule reads (calibration.CALIBRATION_COLUMNS, 80 kB) as
# docs/frontier/<task>-calibration.parquet, so every machine chooses the same thresholds (likewise
# docs/frontier/<task>-64x2-calibration.parquet from data/<task>-64x2-corrector.parquet for the extras).
# Without that file the run starts anyway (the adaptive rows come last) and must be restarted with it before it
# reaches them. Background runs are niced so that foreground work keeps the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
TASKS=${TASKS:-"walker-walk cheetah-run"}
EPISODES=${EPISODES:-30}

pids() { pgrep -f "gym-qwen evaluate checkpoint=models/$1-size1-seed1.pt mode=all" || true; }
# The extra settings, each in its own log on the same episodes: speculation on the cheapest budget with a corrector
# distilled from that budget's own plans (collect planner_budget=64x2 seed=3 spec_exec_horizon=6 episodes=16, then
# distill label=mean, the label with the lower test error on both tasks), corrected k=3 and adaptive k=6 with its
# threshold chosen on that collection. One line each: <tag> <evaluate keys>.
extras() {
  local own="models/correctors/$1-size1-seed1-64x2-two_tower.pt"  # made for walker-walk and cheetah-run only
  local c="corrector_type=two_tower corrector_checkpoint=$own"
  if [ -f "$own" ]; then
    echo "64x2-corrected mode=spec_corrector spec_exec_horizon=3 planner_budget=64x2 $c"
    echo "64x2-adaptive mode=adaptive spec_exec_horizon=6 planner_budget=64x2 $c threshold_data=docs/frontier/$1-64x2-calibration.parquet threshold_budget=0.33"
  fi
  # the planner family below 64x2: competitors at the few ms per step that speculation on 64x2 / 128x3 costs
  echo "32x1 mode=baseline planner_budget=32x1"
  echo "32x2 mode=baseline planner_budget=32x2"
  # ... and speculation on them, as on the family's two cheapest (the full planner's two-tower and thresholds)
  local full="corrector_type=two_tower threshold_data=docs/frontier/$1-calibration.parquet threshold_budget=0.33"
  for b in 32x1 32x2; do
    echo "$b-corrected mode=spec_corrector spec_exec_horizon=3 planner_budget=$b corrector_type=two_tower"
    echo "$b-adaptive mode=adaptive spec_exec_horizon=6 planner_budget=$b $full"
  done
  local k3="models/correctors/$1-size1-seed1-k3-two_tower.pt"  # made by `k3-dagger`
  if [ -f "$k3" ]; then echo "k3-dagger mode=spec_corrector spec_exec_horizon=3 corrector_type=two_tower corrector_checkpoint=$k3"; fi
}
# $1 task, $2 episodes, $3 tag suffix ("" or "-timing"): play the extra settings one after the other
run_extras() {
  extras "$1" | while read -r tag keys; do
    # shellcheck disable=SC2086
    .venv/bin/gym-qwen evaluate checkpoint="models/$1-size1-seed1.pt" episodes="$2" seed=1 $keys torch_threads=1 \
      compile=true progress=false output="docs/frontier/$1-$tag$3.json" resume=true
  done
}
thresholds() {  # the adaptive rows' thresholds: chosen on the calibration episodes when they are there
  local calib="docs/frontier/$1-calibration.parquet"
  if [ -f "$calib" ]; then echo "threshold_data=$calib threshold_budget=0.33"
  else echo "mismatch_threshold=0.2"; echo "$1: no $calib yet: restart with it before the adaptive rows" >&2; fi
}

# $1 task: everything `start` needs for a new task, then the frontier itself (each step skipped once its output
# exists; the frontier runs resume from their episode logs)
pipeline() {
  local t=$1 ckpt="models/$1-size1-seed1.pt" calib="data/$1-calibration.parquet" dagger="data/$1-dagger.parquet"
  local open="runs/correctors/$1-size1-seed1-openloop" keys="torch_threads=1 progress=false"
  # a smoke test's small planners (SMOKE_COLLECT="planner_budget=32x1" SMOKE_EVALUATE="num_samples=32 iterations=1")
  local smoke=${SMOKE_COLLECT:-} smoke_eval=${SMOKE_EVALUATE:-}
  [ -f "$ckpt" ] || { echo "$t: no $ckpt: ship its teacher first (scripts/teachers.sh ship)" >&2; return 2; }
  echo "$t: pipeline $(date -u +%F\ %H:%M)"
  # a collection's output is written once, when its last episode is in (resume=true picks up its episode shards)
  # shellcheck disable=SC2086
  [ -f "$calib" ] || .venv/bin/gym-qwen collect checkpoint="$ckpt" episodes="${COLLECT_EPISODES:-16}" seed=1 \
    spec_exec_horizon=6 output="$calib" $keys $smoke resume=true
  .venv/bin/python -m gym_qwen.platform.speculative.calibration "$calib" "docs/frontier/$t-calibration.parquet"
  # shellcheck disable=SC2086
  [ -f "$open-temporal.pt" ] || .venv/bin/gym-qwen distill data="$calib" tdmpc_ckpt="$ckpt" corrector_type=temporal \
    epochs="${EPOCHS:-150}" save_path="$open" $keys mlflow=false
  # shellcheck disable=SC2086
  [ -f "$dagger" ] || .venv/bin/gym-qwen collect checkpoint="$ckpt" corrector_type=temporal \
    corrector_checkpoint="$open-temporal.pt" episodes="${DAGGER_EPISODES:-12}" seed=2 output="$dagger" $keys $smoke \
    resume=true
  for kind in two_tower temporal; do
    # shellcheck disable=SC2086
    [ -f "models/correctors/$t-size1-seed1-$kind.pt" ] || .venv/bin/gym-qwen distill data="$calib,$dagger" \
      tdmpc_ckpt="$ckpt" corrector_type=$kind epochs="${EPOCHS:-150}" save_path="models/correctors/$t-size1-seed1" \
      $keys mlflow=false
  done
  local resume=false; [ -f "docs/frontier/$t.episodes.jsonl" ] && resume=true
  # shellcheck disable=SC2086
  .venv/bin/gym-qwen evaluate checkpoint="$ckpt" mode=all episodes="$EPISODES" seed=1 spec_exec_horizons=1,3,6 \
    planner_budgets=64x2,128x3,256x4 $(thresholds "$t") torch_threads=1 compile=true progress=false \
    output="docs/frontier/$t.json" plot="docs/frontier-$t.png" $smoke_eval resume=$resume
  if [ "${EXTRAS:-true}" = true ]; then run_extras "$t" "$EPISODES" ""; fi
  echo "$t: pipeline done $(date -u +%F\ %H:%M)"
}

case "${1:-status}" in
  pipeline)
    mkdir -p logs docs/frontier runs/correctors
    for t in $TASKS; do
      if pgrep -f "frontier.sh pipeline-task $t" >/dev/null; then echo "$t: pipeline already running"; continue; fi
      setsid nohup nice -n 10 "$0" pipeline-task "$t" >> "logs/frontier-pipeline-$t.log" 2>&1 < /dev/null &
      echo "$t: pipeline started (log: logs/frontier-pipeline-$t.log)"
    done ;;
  pipeline-task) pipeline "$2" ;;
  start)
    mkdir -p logs docs/frontier
    for t in $TASKS; do
      if [ -n "$(pids "$t")" ]; then echo "$t: already running"; continue; fi
      threshold=$(thresholds "$t")
      resume=false; [ -f "docs/frontier/$t.episodes.jsonl" ] && resume=true
      # shellcheck disable=SC2086
      setsid nohup nice -n 10 .venv/bin/gym-qwen evaluate checkpoint="models/$t-size1-seed1.pt" mode=all episodes="$EPISODES" \
        seed=1 spec_exec_horizons=1,3,6 planner_budgets=64x2,128x3,256x4 $threshold \
        torch_threads=1 compile=true progress=false output="docs/frontier/$t.json" plot="docs/frontier-$t.png" \
        resume=$resume >> "logs/frontier-$t.log" 2>&1 < /dev/null &
      echo "$t: started (log: logs/frontier-$t.log)"
    done ;;
  k3-dagger)  # cheetah-run's <= 0.33-calls target: a two-tower distilled for k = 3 on DAgger chunks of 3 (the
              # shipped one: open-loop and DAgger chunks of 6, label=sample), label=mean, then the extras (its
              # spec_corrector k=3 row among them) on the frontier's episodes (one torch thread per task)
    for t in $TASKS; do
      (
        set -e
        data="data/$t-dagger-k3.parquet" stem="models/correctors/$t-size1-seed1-k3"
        .venv/bin/gym-qwen collect checkpoint="models/$t-size1-seed1.pt" corrector_type=two_tower \
          spec_exec_horizon=3 episodes=16 seed=20 output="$data" torch_threads=1 progress=false resume=true
        [ -f "$stem-two_tower.pt" ] || .venv/bin/gym-qwen distill data="data/$t-calibration.parquet,$data" \
          tdmpc_ckpt="models/$t-size1-seed1.pt" corrector_type=two_tower epochs=150 save_path="$stem" \
          torch_threads=1 progress=false mlflow=false
        run_extras "$t" "$EPISODES" ""  # its row is an extra setting once its corrector exists (extras())
      ) > "logs/frontier-k3-dagger-$t.log" 2>&1 &
    done
    wait; tail -n 3 logs/frontier-k3-dagger-*.log ;;
  extras)  # the extra settings, 30 episodes each (foreground; minutes, the cheap planner plans them)
    for t in $TASKS; do run_extras "$t" "$EPISODES" "" > "logs/frontier-extras-$t.log" 2>&1 & done; wait
    for t in $TASKS; do tail -n 4 "logs/frontier-extras-$t.log"; done ;;
  timing)  # ms per step: every setting on the first TIMING_EPISODES episodes, both tasks at once, nothing else running
    mkdir -p logs docs/frontier
    for t in $TASKS; do
      # shellcheck disable=SC2086
      .venv/bin/gym-qwen evaluate checkpoint="models/$t-size1-seed1.pt" episodes="${TIMING_EPISODES:-1}" mode=all \
        seed=1 spec_exec_horizons=1,3,6 planner_budgets=64x2,128x3,256x4 $(thresholds "$t") \
        torch_threads=1 compile=true progress=false output="docs/frontier/$t-timing.json" resume=true \
        plot="logs/frontier-timing-$t.png" \
        > "logs/frontier-timing-$t.log" 2>&1 && run_extras "$t" "${TIMING_EPISODES:-1}" -timing \
        >> "logs/frontier-timing-$t.log" 2>&1 &
    done
    wait; tail -n 30 logs/frontier-timing-*.log ;;
  status)
    for t in $TASKS; do
      p=$(pids "$t" | tr '\n' ' ')
      if [ -n "$p" ]; then echo "$t: running (pid ${p% })"; else echo "$t: not running"; fi
      f="docs/frontier/$t.episodes.jsonl"
      [ -f "$f" ] && .venv/bin/python -c "
import json, collections, sys
c = collections.Counter(json.loads(l).get('label') for l in open('$f') if l.strip())
c.pop(None, None)
for label, n in c.items(): print(f'  {n:3d} episodes  {label}')"
    done ;;
  pause|continue)
    sig=$([ "$1" = pause ] && echo STOP || echo CONT)
    for t in $TASKS; do  # every gym-qwen run on the task's teacher: the pipeline's collect, distill, evaluate
      for p in $(pgrep -f "gym-qwen .*models/$t-size1-seed1.pt" || true); do kill -"$sig" "$p" && echo "$t: SIG$sig $p"; done
    done ;;
  *) echo "usage: $0 start|status|extras|k3-dagger|timing|pipeline|pause|continue" >&2; exit 2 ;;
esac
