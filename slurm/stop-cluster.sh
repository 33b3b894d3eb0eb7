#!/usr/bin/env bash
# Stop the local Slurm cluster started by start-cluster.sh: SIGTERM by PID file, in reverse order.
# (SIGKILL of slurmctld can resurrect finished jobs as RUNNING on the next start.)
set -uo pipefail
ROOT=${BENCH_SLURM_ROOT:-/tmp/bench-slurm}
for pidfile in "$ROOT/run/slurmd.pid" "$ROOT/run/slurmctld.pid" "$ROOT/run/slurmdbd.pid" "$ROOT/mysql-run/mysqld.pid" /run/munge/munged.pid; do
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    echo ">> slurm: stopping $(basename "$pidfile" .pid) ($pid)"
    kill -TERM "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  fi
done
