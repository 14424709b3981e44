#!/usr/bin/env bash
# Runs the race suite N times in a row (default 5) while `make test` loops
# beside it, each in its own clone of HEAD, and prints one line per run:
# the check that the suite does not depend on how fast the machine is
# (issue 9: "green five times in a row while another make test loads the
# machine"). Stops at the first failing race run; logs stay in the work
# directory it prints. Needs what `make test` needs (see .ci/run).
set -euo pipefail
runs=${1:-5}
repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
work=$(mktemp -d /tmp/race-under-load.XXXXXX)
git clone -q "$repo" "$work/race"
git clone -q "$repo" "$work/load"
echo "race under load: $(git -C "$work/race" log --oneline -1), logs in $work"
export CI=true

(
  cd "$work/load"
  n=0
  while [ ! -e "$work/done" ]; do
    n=$((n + 1)); start=$(date +%s)
    rc=0; make test >"$work/load-$n.log" 2>&1 || rc=$?
    echo "load run $n: rc=$rc $(( $(date +%s) - start ))s" >>"$work/load.txt"
  done
) &
loader=$!
trap 'touch "$work/done"' EXIT

cd "$work/race"
status=0
for i in $(seq 1 "$runs"); do
  start=$(date +%s) before=$(cut -d' ' -f1-3 /proc/loadavg)
  rc=0; go test -race -count=1 -timeout 30m ./... >"$work/race-$i.log" 2>&1 || rc=$?
  echo "race run $i: rc=$rc $(( $(date +%s) - start ))s, load $before -> $(cut -d' ' -f1-3 /proc/loadavg)"
  if [ $rc -ne 0 ]; then
    grep -E '^(--- FAIL|FAIL|panic)' "$work/race-$i.log" || true
    status=1
    break
  fi
done
touch "$work/done"
echo "waiting for the load run in progress to end"
wait "$loader" || true
cat "$work/load.txt" 2>/dev/null || true
exit $status
