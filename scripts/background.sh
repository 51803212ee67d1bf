#!/usr/bin/env bash
# Every long run this project still owes (issues 30 and 31), in two lanes, one per core, each a chain of resumable
# steps that skips what is done, so that `start` at the beginning of a session picks up where the last one stopped
# (background processes do not survive a session; every step below resumes from its own checkpoint or log):
#   lane walker-run:        teacher (scripts/teachers.sh) -> ship (card, 10 episodes) -> frontier.sh pipeline
#                           -> walker-walk's async-DAgger two-tower (collect async_delay=3, distill) -> real-time
#                           benchmark of walker-walk (scripts/realtime.sh), then of walker-run
#   lane cartpole-swingup:  the same -> real-time benchmarks of cheetah-run, then of cartpole-swingup
# (the task lists: scripts/tasks.sh)
# The learning curves of every shipped teacher are drawn when the second new teacher has shipped. Not here: the
# frontier's timing runs and the real-time wall-clock check, which need an otherwise idle machine.
#   scripts/background.sh start            restore (below), then start both lanes (a lane already running is left alone)
#   scripts/background.sh status           each lane's step, and the runs' own status
#   scripts/background.sh pause|continue   SIGSTOP / SIGCONT every run of both lanes (tests, timing, the final CI);
#                                          while paused (logs/background.paused) a lane starts no next step
#   scripts/background.sh signal STOP|CONT the signals alone, flag untouched (realtime.sh, while it times planners)
#   scripts/background.sh stop             end the lanes and their runs (each resumes from its checkpoint or log)
#   scripts/background.sh stash            before the machine goes away: everything the lanes resume from that git does
#                                          not keep (unfinished teachers' train_state, the collections in data/, the
#                                          open-loop correctors in runs/correctors/, benchmarks/results/, mlflow.db,
#                                          and the files in docs/ and models/ that git does not track yet)
#                                          as one commit on the branch teacher-stash, with no parent (each stash
#                                          replaces the last, so old replay buffers do not pile up; main's tree
#                                          never holds them). A branch of this clone only: a new machine gets main
#                                          alone, so what must survive is committed (docs/realtime/, docs/frontier/)
#   scripts/background.sh restore          on a new machine, before `start`: put back every stashed file this
#                                          checkout lacks (a file already here is left as it is)
set -euo pipefail
cd "$(dirname "$0")/.."
LANES=${LANES:-"walker-run:walker-walk cartpole-swingup:cheetah-run"}  # <new task>:<real-time benchmark task>
. scripts/tasks.sh
NEW=$NEW_TASKS

lane_pid() { pgrep -f "scripts/background.sh lane $1 " || true; }
ASYNC_STEPS="gym-qwen (collect|distill) .*models/(${FIRST_TASKS// /|})-size1-seed1.pt"  # a lane's async-DAgger steps
say() { echo "$(date -u +%F\ %H:%M) $*"; }

wait_for() {  # $1: pgrep pattern; polls until no such process is left
  while pgrep -f "$1" >/dev/null; do sleep 30; done
}
PAUSED=logs/background.paused
unpaused() {  # a step that ends while everything is paused (tests, timing, the final CI) starts no next one
  while [ -f "$PAUSED" ]; do sleep 30; done
}

lane() {  # $1 new task, $2 real-time benchmark task
  local t=$1 rt=$2 run="runs/$1/teacher/seed1" ckpt="models/$1-size1-seed1.pt"
  if [ ! -f "$ckpt" ] && [ ! -f "$run/agent.pt" ]; then
    say "$t: training its teacher"
    TASKS=$t scripts/teachers.sh start
    sleep 10; wait_for "gym-qwen train task=$t .*exp_name=teacher"
    [ -f "$run/agent.pt" ] || { say "$t: the training ended without $run/agent.pt (logs/teacher-$t.log)"; return 1; }
  fi
  if [ ! -f "$ckpt" ]; then
    say "$t: shipping its teacher (10 episodes for the card)"
    .venv/bin/gym-qwen teacher run="$run" episodes=10 torch_threads=1 progress=false > "logs/ship-$t.log" 2>&1
    tail -n 4 "logs/ship-$t.log"
    .venv/bin/python -c 'from gym_qwen.platform.training.teachers import write_index; print(write_index("models"))'
    local all=true; for n in $NEW; do [ -f "models/$n-size1-seed1.pt" ] || all=false; done
    if [ "$all" = true ]; then  # the curves of every shipped teacher, the earlier ones from their cards
      .venv/bin/gym-qwen curves runs="$(ls models/*-size1-seed1.json | paste -sd,)" output=docs/learning-curves.png \
        > logs/curves.log 2>&1 && say "curves: docs/learning-curves.png"
    fi
  fi
  unpaused; say "$t: frontier pipeline"
  scripts/frontier.sh pipeline-task "$t"
  local async="models/correctors/$rt-size1-seed1-async-d3"  # what could close a gap at d = 3 (issue 31)
  if [ ! -f "$async-two_tower.pt" ]; then
    unpaused; say "$rt: a two-tower trained on async data (DAgger with the async executor, d = 3)"
    .venv/bin/gym-qwen collect checkpoint="models/$rt-size1-seed1.pt" async_delay=3 corrector_type=two_tower \
      episodes=16 seed=1 output="data/$rt-async-d3.parquet" torch_threads=1 progress=false resume=true
    unpaused; local data="data/$rt-async-d3.parquet"  # aggregated with the open-loop collection where it is here
    [ -f "data/$rt-calibration.parquet" ] && data="data/$rt-calibration.parquet,$data"
    .venv/bin/gym-qwen distill data="$data" \
      tdmpc_ckpt="models/$rt-size1-seed1.pt" corrector_type=two_tower epochs=150 save_path="$async" \
      torch_threads=1 progress=false mlflow=false
  fi
  for r in "$rt" "$t"; do  # the first teacher's, then this lane's new one (issue 31: "and the new tasks")
    unpaused; say "$r: real-time benchmark"
    TASKS=$r scripts/realtime.sh start
    sleep 10; wait_for "bench_realtime.py tasks=$r "
  done
  say "lane $t done"
}

case "${1:-status}" in
  start)
    mkdir -p logs
    "$0" restore  # on a new machine, what the last one stashed (nothing is overwritten)
    for l in $LANES; do
      t=${l%%:*} rt=${l##*:}
      if [ -n "$(lane_pid "$t")" ]; then echo "lane $t: already running"; continue; fi
      setsid nohup "$0" lane "$t" "$rt" >> "logs/lane-$t.log" 2>&1 < /dev/null &
      echo "lane $t: started (log: logs/lane-$t.log)"
    done ;;
  lane) lane "$2" "$3" ;;
  status)
    for l in $LANES; do
      t=${l%%:*}
      if [ -n "$(lane_pid "$t")" ]; then echo "lane $t: running"; else echo "lane $t: not running"; fi
      [ -f "logs/lane-$t.log" ] && tail -n 2 "logs/lane-$t.log" | sed 's/^/  /'
    done
    TASKS="$NEW" scripts/teachers.sh status; TASKS="$NEW" scripts/frontier.sh status
    TASKS="$FIRST_TASKS $NEW" scripts/realtime.sh status ;;
  pause|continue)
    mkdir -p logs
    if [ "$1" = pause ]; then touch "$PAUSED"; "$0" signal STOP; else rm -f "$PAUSED"; "$0" signal CONT; fi ;;
  signal)
    [ "${2:-}" = STOP ] || [ "${2:-}" = CONT ] || { echo "usage: $0 signal STOP|CONT" >&2; exit 2; }
    cmd=$([ "$2" = STOP ] && echo pause || echo continue)
    # each script's own tasks, whatever TASKS this was called with (realtime.sh check calls it with its own)
    TASKS="$NEW" scripts/teachers.sh "$cmd"; TASKS="$NEW" scripts/frontier.sh "$cmd"
    TASKS="$FIRST_TASKS $NEW" scripts/realtime.sh "$cmd"
    for p in $(pgrep -f "$ASYNC_STEPS" || true); do kill -"$2" "$p" && echo "async-DAgger step: SIG$2 $p"; done ;;
  stop)
    for l in $LANES; do p=$(lane_pid "${l%%:*}"); [ -n "$p" ] && kill $p; done
    for pattern in "exp_name=teacher" "frontier.sh pipeline-task" "gym-qwen .*models/(${NEW// /|})" \
                   "gym-qwen teacher run=" "bench_realtime.py" "$ASYNC_STEPS"; do
      pkill -CONT -f "$pattern" || true; pkill -f "$pattern" || true
    done ;;
  stash)
    files=()
    for t in $NEW; do  # an unfinished teacher (a finished one ships to models/, which git keeps)
      run="runs/$t/teacher/seed1"
      if [ -f "$run/train_state.pt" ] && [ ! -f "$run/agent.pt" ]; then
        for f in train_state.pt config.yaml eval.csv; do [ -f "$run/$f" ] && files+=("$run/$f"); done
      fi
    done
    while IFS= read -r f; do files+=("$f"); done < <(find data runs/correctors benchmarks/results -type f \
      2>/dev/null | sort)
    # and what the lanes wrote into docs/ and models/ that is not committed yet (episode logs, correctors, cards)
    while IFS= read -r f; do files+=("$f"); done < <(git ls-files --others --exclude-standard docs models)
    [ -f mlflow.db ] && files+=(mlflow.db)
    [ ${#files[@]} -gt 0 ] || { echo "nothing to stash"; exit 0; }
    index=$(mktemp); rm -f "$index"
    for f in "${files[@]}"; do
      GIT_INDEX_FILE=$index git update-index --add --cacheinfo "100644,$(git hash-object -w "$f"),$f"
    done
    tree=$(GIT_INDEX_FILE=$index git write-tree); rm -f "$index"
    commit=$(git commit-tree "$tree" -m "background runs to resume from ($(date -u +%F\ %H:%M), ${#files[@]} files)")
    git branch -f teacher-stash "$commit" >/dev/null
    echo "stashed ${#files[@]} files ($(du -ch "${files[@]}" | tail -n 1 | cut -f1)) as teacher-stash ${commit:0:7}" ;;
  restore)
    ref=teacher-stash; git rev-parse -q --verify "$ref" >/dev/null || ref=origin/teacher-stash  # (in a clone)
    git rev-parse -q --verify "$ref" >/dev/null || { echo "no branch teacher-stash: nothing to restore"; exit 0; }
    n=0
    while IFS= read -r f; do
      if [ -e "$f" ]; then echo "$f: already here, left as it is"; continue; fi
      mkdir -p "$(dirname "$f")"; git show "$ref:$f" > "$f.tmp" && mv "$f.tmp" "$f"; n=$((n + 1))
    done < <(git ls-tree -r --name-only "$ref")
    echo "restored $n files from $ref ($(git log -1 --format=%s "$ref"))" ;;
  *) echo "usage: $0 start|status|pause|continue|signal|stop|stash|restore" >&2; exit 2 ;;
esac
