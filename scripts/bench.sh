#!/usr/bin/env bash
# make bench: run every benchmark and write the figures, with the command
# that produced them, to BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cmd=(go test -run '^$' -bench . -benchtime 1x -benchmem ./...)
out=$(mktemp)
load=$(cut -d' ' -f1-3 /proc/loadavg)
"${cmd[@]}" | tee "$out"
{
  echo "# Benchmarks"
  echo
  echo "Written by \`make bench\` on $(date -u +%Y-%m-%d) ($(go version | cut -d' ' -f3), $(nproc) cores, $(uname -m); load average at the start: $load)."
  echo "Goals are those of DESIGN §7. Reproduce with:"
  echo
  echo '```'
  echo "${cmd[*]}"
  echo '```'
  echo
  echo "| benchmark | ns/op | extra |"
  echo "| --- | --- | --- |"
  grep -E '^Benchmark' "$out" | while read -r name n ns _ rest; do
    echo "| $name | $ns | $(echo "$rest" | tr -s ' \t' ' ') |"
  done
  echo
  echo "Which benchmark measures which goal of DESIGN §7:"
  echo
  echo "| goal | benchmark and figure |"
  echo "| --- | --- |"
  echo "| N new deployments: N RunInstances, 0 CreateTags, DescribeInstances only from resyncs | BenchmarkConvergeAWS: RunInstances, CreateTags, DescribeInstances (20 deployments, resync 2s) |"
  echo "| idle resync: ceil(N/1000) DescribeInstances per region, 0 mutating | BenchmarkIdleResyncAWS: DescribeInstances/resync, other-calls; pagination at 1000 is TestListPagesAtMaxResults1000 |"
  echo "| converge time within 1.2x of bare SDK calls at the same concurrency | BenchmarkConvergeAWS: ratio (s-converge / s-bare-sdk, 8 workers, same RunInstances bucket) |"
  echo "| preemption seen -> replacement RunInstances p50 < 1s | BenchmarkPreemptionToReplacementAWS: ms-p50 |"
  echo "| apply of 10,000 manifests < 5s, one transaction | BenchmarkApply10000Manifests: ns/op (one store transaction by construction) |"
  echo "| control plane memory at 10,000 deployments < 150 MiB RSS | BenchmarkControlPlaneMemory10000: MiB-RSS, MiB-peak-RSS |"
  echo "| apply -> Ready through the cloud emulator (real cloud-init VMs), VM boot shown apart | BenchmarkAWSEmulatorApplyToReadyAndPreemptionToReady: s-apply-to-ready-p50 = s-vm-boot-p50 (container up -> host key on the console) + s-anycloud-and-moto-p50 |"
  echo "| preemption -> replacement Ready (resync only, 30s) | BenchmarkAWSEmulatorApplyToReadyAndPreemptionToReady: s-preempt-to-ready-p50, of which s-replacement-boot-p50 |"
  echo "| unreachable booting VM: <= ~10 SSH dials, <= ~20 store writes a minute | TestAVMThatCannotBeReachedForAMinuteIsDialledAFewTimesThenBecomesReady (controller, fake clock): 5 dials, 7 writes |"
  echo "| decoding stays linear (a 40,000-key bundle) | BenchmarkDecodeBundle: ns/op at keys=40000 about 4x keys=10000 |"
  echo "| idle resync linear in N; 10,000 idle deployments under 2 CPU-s a minute | BenchmarkIdleResync: s-resync and cpu-us-per-deployment at 1k/2k/4k/8k/10k, cpu-s-per-min-idle at 1k and 10k (30s resync) |"
  echo "| no read on the resync's path scans every deployment | TestAResyncReadsTheStoreInProportionToN (controller): objects read per deployment per resync equal at 50 and 500 |"
  echo "| exit within 1 s of SIGTERM at 10,000 deployments | BenchmarkControlPlaneMemory10000: s-sigterm-to-exit (sent as a resync's fan-out starts) |"
  echo "| a launched VM reaches its first SSH attempt within a few seconds of running | BenchmarkLaunchToFirstSSH: ns/op |"
  echo "| terminate -> replacement bounded by the resync period, not N (no events) | BenchmarkTerminateToReplacementResyncOnly: s-p50, s-max at 6/200/1000 deployments, 5s resync |"
  echo "| apply of 10,000 objects within about 5x the bbolt floor, a few KB per object | BenchmarkApplyVersusBoltFloor: cpu-s-apply / cpu-s-bolt-floor (CPU; wall time on a loaded machine is the wait for a core), ratio (wall), B-alloc-per-object |"
  echo "| EC2 event in the queue -> replacement RunInstances p50 < 1 s | BenchmarkInterruptionsAWS/events: s-warning-to-runinstances-p50, -max; s-terminated-to-runinstances-p50 (state-change event) |"
  echo "| termination: events vs resync only (30s) vs 15s polling | BenchmarkInterruptionsAWS: events s-terminated-to-runinstances-p50 vs resync-30s vs poll-15s, same run |"
  echo "| local docker kill -> replacement running: p50 < 1 s, max < 3 s over 50 kills, a busy loop per core | BenchmarkLocalKillToReplacement: s-p50, s-max; s-kill-to-create-p50 is anycloud's share (kill -> the engine's create event) |"
  echo "| etcd: the other control plane leads within 15 s of the leader's death | BenchmarkEtcdFailover: s-takeover (default 5 s lease) |"
  echo
  echo "Raw output:"
  echo
  echo '```'
  grep -vE '^(ok|PASS|\?)' "$out" || true
  echo '```'
} > BENCHMARKS.md
rm -f "$out"
echo "wrote BENCHMARKS.md"
