#!/usr/bin/env bash
# Install (Debian packages) and start a one-node Slurm cluster on localhost, with accounting.
# Idempotent: daemons already running (by their PID files) are left alone.
#
# Why accounting: submitit polls job states with `sacct`; without slurmdbd a job that dies without
# writing a result (scancel, time limit) leaves `job.result()` waiting forever.
#
# Everything lives under $BENCH_SLURM_ROOT (default /tmp/bench-slurm); the configs go to
# /etc/slurm (where the Debian clients look). Stop with slurm/stop-cluster.sh.
set -euo pipefail
ROOT=${BENCH_SLURM_ROOT:-/tmp/bench-slurm}
DB_PORT=${BENCH_SLURM_DB_PORT:-33061}
NODE_CPUS=${BENCH_SLURM_CPUS:-4}   # advertised CPUs (more than the cores lets 1-CPU jobs overlap)
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
log() { echo ">> slurm: $*"; }

packages=(munge slurm-client slurmctld slurmd slurmdbd slurm-wlm-mysql-plugin mariadb-server)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local t=$1 what=$2; shift 2
  for _ in $(seq 1 $((t * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "slurm: timed out waiting for $what (logs in $ROOT/log)" >&2; return 1
}

mkdir -p "$ROOT"/{log,run,spool/ctld,spool/d,mysql-run}
chown mysql:mysql "$ROOT/mysql-run"

# --- munge ---------------------------------------------------------------------------
[ -s /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
mkdir -p /run/munge && chown munge:munge /run/munge
if ! running /run/munge/munged.pid; then
  log "starting munged"
  runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
fi

# --- MariaDB for slurmdbd (private datadir, socket and port) --------------------------
MYSQL_SOCK=$ROOT/mysql-run/mysqld.sock
if [ ! -d "$ROOT/mysql/mysql" ]; then
  log "initialising MariaDB datadir"
  mariadb-install-db --no-defaults --datadir="$ROOT/mysql" --user=mysql --auth-root-authentication-method=socket >/dev/null
fi
if ! running "$ROOT/mysql-run/mysqld.pid"; then
  log "starting mariadbd on 127.0.0.1:$DB_PORT"
  nohup mariadbd --no-defaults --user=mysql --datadir="$ROOT/mysql" --socket="$MYSQL_SOCK" \
    --pid-file="$ROOT/mysql-run/mysqld.pid" --port="$DB_PORT" --bind-address=127.0.0.1 \
    --innodb-buffer-pool-size=512M --innodb-lock-wait-timeout=900 --log-error="$ROOT/log/mysqld.log" \
    >/dev/null 2>&1 &
  wait_for 60 mariadb mariadb --no-defaults -S "$MYSQL_SOCK" -u root -e "SELECT 1"
fi
mariadb --no-defaults -S "$MYSQL_SOCK" -u root -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'bench-slurm';
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'bench-slurm';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"

# --- configs ---------------------------------------------------------------------------
MEM_MB=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
mkdir -p /etc/slurm
cat > /etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=bench-slurm
StorageLoc=slurm_acct_db
PidFile=$ROOT/run/slurmdbd.pid
LogFile=$ROOT/log/slurmdbd.log
CONF
chmod 600 /etc/slurm/slurmdbd.conf
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=bench
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$ROOT/spool/ctld
SlurmdSpoolDir=$ROOT/spool/d
SlurmctldPidFile=$ROOT/run/slurmctld.pid
SlurmdPidFile=$ROOT/run/slurmd.pid
SlurmctldLogFile=$ROOT/log/slurmctld.log
SlurmdLogFile=$ROOT/log/slurmd.log
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/linux
JobRequeue=1
KillWait=5
SlurmdParameters=config_overrides
NodeName=localhost CPUs=$NODE_CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF

# --- slurm daemons ---------------------------------------------------------------------
if ! running "$ROOT/run/slurmdbd.pid"; then
  log "starting slurmdbd"
  /usr/sbin/slurmdbd
  wait_for 60 slurmdbd sacctmgr -n list cluster
fi
if ! running "$ROOT/run/slurmctld.pid"; then
  log "starting slurmctld"
  /usr/sbin/slurmctld
fi
if ! running "$ROOT/run/slurmd.pid"; then
  log "starting slurmd"
  /usr/sbin/slurmd -N localhost
fi
wait_for 60 "an idle node" bash -c 'sinfo -h -o %T | grep -Eq "idle|mixed|allocated"'
wait_for 60 "accounting (sacct)" sacct -n -X -S now
log "up: $(sinfo -h -o '%P %D %T %c CPUs')"
