#!/usr/bin/env bash
# The teacher trainings (walker-run and cartpole-swingup by default; walker-walk and cheetah-run were the first; model
# size 1, seed 1, 100k env steps, paper planning settings) run in the background for hours and across sessions. This starts or resumes them with the same keys
# every time (a resumed run must match the original's), and pauses them while tests or benchmarks need the CPU.
#   scripts/teachers.sh start     start, or resume from the last checkpoint (every 2000 env steps)
#   scripts/teachers.sh status    running or not, last evaluations
#   scripts/teachers.sh pause     SIGSTOP (e.g. during `make test` or a benchmark)
#   scripts/teachers.sh continue  SIGCONT
#   scripts/teachers.sh ship      when both are finished: gym-qwen teacher for each (models/ and its cards), then
#                                 gym-qwen curves of every shipped teacher (docs/learning-curves.png and .json,
#                                 logged to MLflow; the earlier teachers' curves from their cards)
#   (carrying an unfinished run to the next machine: scripts/background.sh stash / restore)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/tasks.sh
TASKS=${TASKS:-$NEW_TASKS}  # the shipped walker-walk and cheetah-run: TASKS="$FIRST_TASKS"
KEYS="model_size=1 steps=100000 seed=1 compile=true torch_threads=1 eval_freq=10000 eval_episodes=2 \
checkpoint_freq=2000 exp_name=teacher"

pids() { pgrep -f "gym-qwen train task=$1 .*exp_name=teacher" || true; }

case "${1:-status}" in
  start)
    mkdir -p logs
    for t in $TASKS; do
      if [ -n "$(pids "$t")" ]; then echo "$t: already running"; continue; fi
      # shellcheck disable=SC2086
      setsid nohup .venv/bin/gym-qwen train task="$t" $KEYS resume=true >> "logs/teacher-$t.log" 2>&1 < /dev/null &
      echo "$t: started (log: logs/teacher-$t.log)"
      sleep 5  # one at a time into the MLflow store
    done ;;
  status)
    for t in $TASKS; do
      p=$(pids "$t" | tr '\n' ' ')
      if [ -n "$p" ]; then echo "$t: running (pid ${p% })"; else echo "$t: not running"; fi
      csv="runs/$t/teacher/seed1/eval.csv"
      if [ -f "$csv" ]; then
        tail -n +2 "$csv" | awk -F, '{printf "  eval @ %6d env steps: %7.1f ± %.1f\n", $1, $2, $3}'
      fi
      if [ -f "runs/$t/teacher/seed1/agent.pt" ]; then echo "  finished: runs/$t/teacher/seed1/agent.pt"; fi
    done ;;
  pause|continue)
    sig=$([ "$1" = pause ] && echo STOP || echo CONT)
    for t in $TASKS; do for p in $(pids "$t"); do kill -"$sig" "$p" && echo "$t: SIG$sig $p"; done; done ;;
  ship)
    runs=()
    mkdir -p logs
    for t in $TASKS; do
      run="runs/$t/teacher/seed1"
      if [ ! -f "$run/agent.pt" ]; then echo "$t: not finished yet ($run holds no agent.pt)" >&2; exit 1; fi
      runs+=("$run")
    done
    # One teacher per core, side by side; the index is rebuilt once both cards are written.
    pids_=()
    for run in "${runs[@]}"; do
      t=$(basename "$(dirname "$(dirname "$run")")")
      .venv/bin/gym-qwen teacher run="$run" episodes=10 torch_threads=1 progress=false \
        > "logs/ship-$t.log" 2>&1 &
      pids_+=($!); echo "$t: evaluating 10 episodes for its card (log: logs/ship-$t.log)"
    done
    fail=0; for p in "${pids_[@]}"; do wait "$p" || fail=1; done
    for run in "${runs[@]}"; do t=$(basename "$(dirname "$(dirname "$run")")"); tail -n 8 "logs/ship-$t.log"; done
    [ "$fail" = 0 ] || { echo "a teacher failed to ship (see logs/ship-*.log)" >&2; exit 1; }
    .venv/bin/python -c 'from gym_qwen.platform.training.teachers import write_index; print(write_index("models"))'
    curves=("${runs[@]}")  # and the teachers shipped before, from their cards (their run folders are gone)
    for card in models/*-size1-seed1.json; do
      t=$(basename "$card" -size1-seed1.json)
      case " $TASKS " in *" $t "*) ;; *) curves+=("$card") ;; esac
    done
    .venv/bin/gym-qwen curves runs="$(IFS=,; echo "${curves[*]}")" output=docs/learning-curves.png ;;
  *) echo "usage: $0 start|status|pause|continue|ship" >&2; exit 2 ;;
esac
