#!/usr/bin/env bash
# make bench: run every benchmark and write the figures, with the command
# that produced them, to BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cmd=(go test -run '^$' -bench . -benchtime 1x -benchmem ./...)
out=$(mktemp)
"${cmd[@]}" | tee "$out"
{
  echo "# Benchmarks"
  echo
  echo "Written by \`make bench\` on $(date -u +%Y-%m-%d) ($(go version | cut -d' ' -f3), $(nproc) cores, $(uname -m))."
  echo "Goals are those of DESIGN §7. Reproduce with:"
  echo
  echo '```'
  echo "${cmd[*]}"
  echo '```'
  echo
  echo "| benchmark | ns/op | extra |"
  echo "| --- | --- | --- |"
  grep -E '^Benchmark' "$out" | while read -r name n ns _ rest; do
    echo "| $name | $ns | $rest |"
  done
  echo
  echo "Raw output:"
  echo
  echo '```'
  grep -vE '^(ok|PASS|\?)' "$out" || true
  echo '```'
} > BENCHMARKS.md
rm -f "$out"
echo "wrote BENCHMARKS.md"
