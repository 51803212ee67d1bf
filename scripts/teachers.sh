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
#   scripts/teachers.sh stash     before a machine goes away: copy each unfinished run's train_state.pt, config.yaml
#                                 and eval.csv, and the MLflow store, onto the branch teacher-stash (committed there,
#                                 not on main, so the next machine has them and main's tree stays small)
#   scripts/teachers.sh restore   on a new machine: put them back where the runs resume from (runs/, mlflow.db);
#                                 `start` then continues them
set -euo pipefail
cd "$(dirname "$0")/.."
TASKS=${TASKS:-"walker-run cartpole-swingup"}  # the shipped walker-walk and cheetah-run: TASKS="walker-walk cheetah-run"
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
  stash)  # onto the branch teacher-stash (its own worktree), not main: replay buffers stay out of main's tree
    wt=${STASH_WORKTREE:-../teacher-stash}
    if [ ! -d "$wt" ]; then
      if ! git rev-parse -q --verify teacher-stash >/dev/null; then  # a branch of its own, with no history of main
        git branch teacher-stash "$(git commit-tree "$(git hash-object -t tree /dev/null)" -m "teacher stash")"
      fi
      git worktree add -q "$wt" teacher-stash
    fi
    for t in $TASKS; do
      run="runs/$t/teacher/seed1"
      if [ -f "$run/agent.pt" ] || [ ! -f "$run/train_state.pt" ]; then continue; fi
      mkdir -p "$wt/carry/teachers/$t"
      for f in train_state.pt config.yaml eval.csv; do [ -f "$run/$f" ] && cp "$run/$f" "$wt/carry/teachers/$t/"; done
      echo "$t: stashed $(du -h "$run/train_state.pt" | cut -f1) into teacher-stash:carry/teachers/$t"
    done
    [ -f mlflow.db ] && cp mlflow.db "$wt/carry/mlflow.db" && echo "mlflow.db: stashed"
    git -C "$wt" add -A carry && git -C "$wt" commit -qm "teacher runs to resume from ($(date -u +%F\ %H:%M))" \
      && echo "committed on branch teacher-stash" ;;
  restore)  # on a new machine: from the branch teacher-stash back to runs/ and mlflow.db; `start` then continues
    ref=teacher-stash; git rev-parse -q --verify "$ref" >/dev/null || ref=origin/teacher-stash  # (in a clone)
    for t in $TASKS; do
      git cat-file -e "$ref:carry/teachers/$t/train_state.pt" 2>/dev/null || continue
      run="runs/$t/teacher/seed1"
      if [ -f "$run/train_state.pt" ]; then echo "$t: $run already holds a train_state.pt: left as it is"; continue; fi
      mkdir -p "$run"
      for f in train_state.pt config.yaml eval.csv; do
        git cat-file -e "$ref:carry/teachers/$t/$f" 2>/dev/null && git show "$ref:carry/teachers/$t/$f" > "$run/$f"
      done
      echo "$t: restored into $run"
    done
    if git cat-file -e $ref:carry/mlflow.db 2>/dev/null && [ ! -f mlflow.db ]; then
      git show $ref:carry/mlflow.db > mlflow.db && echo "mlflow.db: restored"; fi ;;
  *) echo "usage: $0 start|status|pause|continue|ship|stash|restore" >&2; exit 2 ;;
esac
