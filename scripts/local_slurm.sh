#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for trying `--executor slurm` (and for the
# tests of the SLURM executor) without a real cluster.
#
#   sudo scripts/local_slurm.sh start    # install slurm-wlm + munge if missing, start
#   scripts/local_slurm.sh status        # sinfo and squeue
#   sudo scripts/local_slurm.sh stop     # stop the daemons, remove their state
#
# On a laptop (Debian/Ubuntu): `sudo scripts/local_slurm.sh start`, then launch a study
# as yourself with `python -m batch_rl.study launch STUDY.toml --executor slurm`; jobs
# run as the user who submits them, on this machine's CPUs (and nothing else: no GPUs
# are configured). `stop` when done. Everything the daemons write (state, spool, logs,
# pid files, the generated slurm.conf) lives in $BATCH_RL_SLURM_DIR
# (default /tmp/batch_rl_slurm).
#
# Where slurm.conf lives: SLURM's commands (sbatch, srun, scontrol, sinfo; submitit
# calls them from Python) read $SLURM_CONF, else /etc/slurm/slurm.conf. `start` links
# /etc/slurm/slurm.conf to the generated file when no other slurm.conf is there, so
# every shell finds the cluster; where a slurm.conf of a real installation already
# exists it is left alone, and `start` prints the `export SLURM_CONF=...` to use
# instead. `stop` removes only the link it made.
#
# The daemons need root (slurmd starts jobs as their users; munged's key and socket are
# root's), and so does installing the packages. Environment:
#   BATCH_RL_SLURM_DIR       the state directory (default /tmp/batch_rl_slurm)
#   BATCH_RL_SLURM_KILLWAIT  seconds between a job's SIGTERM and SIGKILL on cancel,
#                            requeue and preemption (default 30): the time train.py
#                            has to finish its step and write its checkpoint
#   BATCH_RL_SLURM_TIMEOUT   seconds `start` waits for `srun hostname` (default 60)
set -euo pipefail

DIR="${BATCH_RL_SLURM_DIR:-/tmp/batch_rl_slurm}"
CONF="$DIR/slurm.conf"
ETC_CONF=/etc/slurm/slurm.conf
KILLWAIT="${BATCH_RL_SLURM_KILLWAIT:-30}"
TIMEOUT="${BATCH_RL_SLURM_TIMEOUT:-60}"
PARTITION=local
PACKAGES="slurm-wlm munge"

die() { echo "local_slurm: $*" >&2; exit 1; }
say() { echo "local_slurm: $*"; }
is_root() { [ "$(id -u)" -eq 0 ]; }

# Installs the Debian packages when a daemon is missing (root only).
ensure_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
      && command -v munged >/dev/null && command -v srun >/dev/null; then
    return
  fi
  is_root || die "SLURM is not installed: run this script with sudo, or install it with" \
    "\`sudo apt-get install -y $PACKAGES\` (Debian/Ubuntu)."
  command -v apt-get >/dev/null || die "SLURM is not installed and there is no apt-get:" \
    "install slurmctld, slurmd, srun and munged with this system's package manager."
  say "installing $PACKAGES"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    $PACKAGES >/dev/null
}

# The node's memory in MB, less a margin for the system (10%, at least 512 MB).
node_memory_mb() {
  local total_kb margin
  total_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
  margin=$(( total_kb / 10 > 524288 ? total_kb / 10 : 524288 ))
  echo $(( (total_kb - margin) / 1024 ))
}

write_conf() {
  local host cpus mem
  host=$(hostname -s)
  cpus=$(nproc)
  mem=$(node_memory_mb)
  mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
  cat > "$CONF" <<EOF
# Written by scripts/local_slurm.sh: a one-node cluster on $host.
ClusterName=batchrl
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# A requeued job waits cred_expire + 1 seconds before it may start again (120 s
# by default); a short one lets preempted jobs resume at once on this one node.
AuthInfo=cred_expire=10
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# Jobs are requeued (scontrol requeue, preemption) rather than failed; a node that
# went down comes back by itself when its slurmd answers again.
JobRequeue=1
ReturnToService=2
# Seconds between SIGTERM and SIGKILL: train.py finishes its step and checkpoints.
KillWait=$KILLWAIT
InactiveLimit=0
MinJobAge=300
# Pending jobs (a requeued one becomes eligible after cred_expire) are looked at
# every 2 s rather than every 30-60 s.
SchedulerParameters=sched_interval=2,bf_interval=2,batch_sched_delay=1
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP DefMemPerCPU=$(( mem / cpus ))
EOF
}

# Points /etc/slurm/slurm.conf at the generated file when nothing else is there.
link_conf() {
  if [ -L "$ETC_CONF" ] && [ "$(readlink "$ETC_CONF")" = "$CONF" ]; then
    return
  fi
  if [ -e "$ETC_CONF" ] || [ -L "$ETC_CONF" ]; then
    say "$ETC_CONF exists and is not this script's: leaving it; set SLURM_CONF (below)."
    return
  fi
  mkdir -p "$(dirname "$ETC_CONF")"
  ln -s "$CONF" "$ETC_CONF"
}

munge_answers() {
  munge --no-input >/dev/null 2>&1
}

start_munge() {
  if munge_answers; then
    return
  fi
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null; then
      mungekey --create --keyfile=/etc/munge/munge.key
    else
      dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
  fi
  local owner=root
  id munge >/dev/null 2>&1 && owner=munge
  chown "$owner:$owner" /etc/munge /etc/munge/munge.key
  chmod 700 /etc/munge
  chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/lib/munge /var/log/munge
  chown "$owner:$owner" /run/munge /var/lib/munge /var/log/munge
  chmod 755 /run/munge
  rm -f /run/munge/munged.pid
  if [ "$owner" = munge ] && command -v runuser >/dev/null; then
    runuser -u munge -- munged --force
  else
    munged --force
  fi
  # `stop` ends the munged this script started (not one of the system's).
  for _ in $(seq 50); do
    munge_answers && [ -s /run/munge/munged.pid ] && break
    sleep 0.1
  done
  munge_answers || die "munged did not start (see /var/log/munge)."
  cp /run/munge/munged.pid "$DIR/munged.pid"
}

daemon_running() {  # pid file of the daemon
  [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

log_tail() {
  for f in "$DIR"/log/slurmctld.log "$DIR"/log/slurmd.log; do
    [ -f "$f" ] && { echo "--- $f"; tail -n 20 "$f"; }
  done
}

# Waits until a job step runs on the node.
wait_ready() {
  local deadline=$(( SECONDS + TIMEOUT ))
  while (( SECONDS < deadline )); do
    if SLURM_CONF="$CONF" timeout 20 srun --quiet --time=1 --ntasks=1 hostname \
        >/dev/null 2>&1; then
      return
    fi
    # A node that registered while slurmctld thought it down: bring it back.
    SLURM_CONF="$CONF" scontrol update nodename="$(hostname -s)" state=resume \
      >/dev/null 2>&1 || true
    sleep 1
  done
  log_tail >&2
  die "the cluster did not run \`srun hostname\` within ${TIMEOUT}s (logs above, in $DIR/log)."
}

cmd_start() {
  ensure_packages
  is_root || die "start needs root (the daemons run as root): sudo $0 start"
  if daemon_running "$DIR/slurmctld.pid" && daemon_running "$DIR/slurmd.pid"; then
    say "already running"
  else
    write_conf
    link_conf
    start_munge
    daemon_running "$DIR/slurmctld.pid" || slurmctld -f "$CONF"
    daemon_running "$DIR/slurmd.pid" || slurmd -f "$CONF"
  fi
  wait_ready
  say "ready: partition '$PARTITION' on $(hostname -s), $(nproc) CPUs"
  if [ "$(readlink "$ETC_CONF" 2>/dev/null || true)" = "$CONF" ]; then
    say "$ETC_CONF links to $CONF (or: export SLURM_CONF=$CONF)"
  else
    echo "export SLURM_CONF=$CONF"
  fi
}

stop_daemon() {  # name, pid file
  local pidfile=$2 pid
  daemon_running "$pidfile" || return 0
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.2
  done
  kill -9 "$pid" 2>/dev/null || true
}

# Cancels every job (any user's) and waits up to KillWait + 10 s for them to end, so
# that no job step outlives the daemons.
cancel_jobs() {
  local jobs deadline
  jobs=$(SLURM_CONF="$CONF" timeout 10 squeue --noheader --format=%A 2>/dev/null || true)
  [ -n "$jobs" ] || return 0
  # shellcheck disable=SC2086
  SLURM_CONF="$CONF" timeout 10 scancel --quiet $jobs 2>/dev/null || true
  deadline=$(( SECONDS + KILLWAIT + 10 ))
  while (( SECONDS < deadline )); do
    jobs=$(SLURM_CONF="$CONF" timeout 10 squeue --noheader --format=%A 2>/dev/null || true)
    [ -n "$jobs" ] || return 0
    sleep 1
  done
}

cmd_stop() {
  is_root || die "stop needs root: sudo $0 stop"
  if [ -f "$CONF" ] && daemon_running "$DIR/slurmctld.pid"; then
    cancel_jobs
  fi
  stop_daemon slurmd "$DIR/slurmd.pid"
  stop_daemon slurmctld "$DIR/slurmctld.pid"
  stop_daemon munged "$DIR/munged.pid"
  if [ -L "$ETC_CONF" ] && [ "$(readlink "$ETC_CONF")" = "$CONF" ]; then
    rm -f "$ETC_CONF"
  fi
  rm -rf "$DIR"
  say "stopped"
}

cmd_status() {
  [ -f "$CONF" ] || die "not started (no $CONF)"
  SLURM_CONF="$CONF" sinfo
  SLURM_CONF="$CONF" squeue
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
