#!/usr/bin/env bash
# The real-time benchmark (issue 31, benchmarks/bench_realtime.py), 30 paired episodes per setting on each shipped
# teacher, one torch thread per task, in the background and resumable (each finished episode is a line of
# $OUT/realtime-<task>.episodes.jsonl; `start` continues from there with the L measured first). OUT is docs/realtime/:
# the episode logs are committed, so that a new machine resumes where the last one stopped.
# Latencies decide d and which budgets fit each period, so they are measured on a quiet machine: `start` pauses every
# other background run (scripts/background.sh's, the other tasks' benchmarks included) while the planners are timed
# (a few seconds per task) and lets them go on after, unless `background.sh pause` was called meanwhile. The
# latencies are kept ($OUT/realtime-<task>.latencies.json), so a resumed run is not timed again.
#   scripts/realtime.sh start       start or resume every task in TASKS
#   scripts/realtime.sh status      running or not, and the settings finished
#   scripts/realtime.sh pause|continue   SIGSTOP / SIGCONT (while timing or running the test suite)
#   scripts/realtime.sh check       the wall-clock check (realtime=true) on the first CHECK_EPISODES (2) episodes of
#                                   each task at the periods CHECK_PERIODS (all; e.g. 1/8,1/4), out CHECK_OUT
#                                   ($OUT/check), one task after the other, everything else in the background paused
#                                   meanwhile (the wall clock needs the cores): deadline misses, and episodes equal to
#                                   the simulated clock's (its settings taken from the 30-episode run's log where it
#                                   has them); out: $OUT/check/, log: logs/realtime-check.log
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/tasks.sh
TASKS=${TASKS:-$FIRST_TASKS}  # and $NEW_TASKS once their frontier pipelines are done (background.sh)
OUT=${OUT:-docs/realtime}  # episode logs, kept latencies and the JSON; the plots go to docs/
EXTRA=${EXTRA:-}  # more bench keys, e.g. realtime=true (on an otherwise idle machine)

pids() { pgrep -f "bench_realtime.py tasks=$1 " || true; }
gap() {  # what could close a gap at d = 3: async on the budget just over P = L/3, a corrector trained on async data
  local keys="gap_budgets=256x4" async="models/correctors/$1-size1-seed1-async-d3-two_tower.pt"
  [ -f "$async" ] && keys="$keys gap_correctors=two_tower:$async"
  # past H at d = 4 and 8: a two-tower distilled on `collect async_delay=4 past_horizon=prior` DAgger data
  local closed="models/correctors/$1-size1-seed1-async-d4-prior-two_tower.pt"
  [ -f "$closed" ] && keys="$keys past_h_correctors=two_tower:$closed"
  echo "$keys"
}

case "${1:-status}" in
  start)
    mkdir -p logs
    scripts/background.sh signal STOP >/dev/null  # every other background run, while the planners are timed
    trap '[ -f logs/background.paused ] || scripts/background.sh signal CONT >/dev/null' EXIT
    for t in $TASKS; do
      if [ -n "$(pids "$t")" ]; then echo "$t: already running"; continue; fi
      log="logs/realtime-$t.log"
      # shellcheck disable=SC2086
      reuse=frontier
      # the wall-clock check's simulated episodes, and rows played on their own (e.g. a gap corrector made later)
      for c in "$OUT"/{check,gap}/realtime-"$t".episodes.jsonl; do [ -f "$c" ] && reuse="$reuse,$c"; done
      # shellcheck disable=SC2086
      setsid nohup .venv/bin/python benchmarks/bench_realtime.py tasks="$t" threads=1 $(gap "$t") reuse="$reuse" out="$OUT" $EXTRA \
        >> "$log" 2>&1 < /dev/null &
      echo "$t: started (log: $log)"
      for _ in $(seq 120); do  # until its planners are timed (the last budget is printed), 2 minutes at most
        sleep 1; tail -n 3 "$log" | grep -q "planner budget 256x4\|async on 256x4\|episodes played\|error" && break
      done
    done ;;
  check)
    n=${CHECK_EPISODES:-2} check_out=${CHECK_OUT:-$OUT/check}
    periods=${CHECK_PERIODS:+periods=$CHECK_PERIODS}
    setsid nohup bash -c "
      scripts/background.sh pause; scripts/realtime.sh pause
      for t in $TASKS; do
        main=$OUT/realtime-\$t.episodes.jsonl; reuse=frontier; [ -f \$main ] && reuse=frontier,\$main
        .venv/bin/python benchmarks/bench_realtime.py tasks=\$t threads=1 episodes=$n realtime=true \
          realtime_episodes=$n reuse=\$reuse out=$check_out $periods \
          plot_dir=$check_out
      done
      scripts/background.sh continue; scripts/realtime.sh continue" >> logs/realtime-check.log 2>&1 < /dev/null &
    echo "wall-clock check started, everything else paused until it ends (log: logs/realtime-check.log)" ;;
  status)
    for t in $TASKS; do
      p=$(pids "$t" | tr '\n' ' ')
      if [ -n "$p" ]; then echo "$t: running (pid ${p% })"; else echo "$t: not running"; fi
      [ -f "logs/realtime-$t.log" ] && grep "episodes played\|L = " "logs/realtime-$t.log" | tail -n 40 | cut -c1-150
    done ;;
  pause|continue)
    sig=$([ "$1" = pause ] && echo STOP || echo CONT)
    for t in $TASKS; do for p in $(pids "$t"); do kill -"$sig" "$p" && echo "$t: SIG$sig $p"; done; done ;;
  *) echo "usage: $0 start|status|pause|continue" >&2; exit 2 ;;
esac
