#!/usr/bin/env bash
# Bring up a one-node Slurm on this machine (munge + slurmctld + slurmd), for tests/test_slurm.py.
#
# Idempotent: installs slurm-wlm and munge from Debian's packages only if they are missing, (re)writes
# /etc/slurm/slurm.conf only if it differs, creates the munge key only if missing, starts each daemon
# only if it is not running, then waits until `sinfo` shows the node usable (idle, or mixed/allocated
# when jobs are already running). A second run is a few checks and takes well under a second.
#
# Needs root and no init system (daemons are started directly, not through systemd).
# Exit status: 0 when the node is up; 1 with a one-line reason on stderr otherwise.
#
# .ci/slurm-up.sh --stop NAME...   stops those daemons (slurmd, slurmctld, munged; in the order given), e.g. the
#                                  names SLURM_UP_STARTED collected; tests/test_slurm.py does this when it ends.
#
# Settings (environment):
#   SLURM_UP_STARTED=FILE  append the name of each daemon this run started (munged, slurmctld, slurmd: those that
#                          were not running) to FILE, so that whoever called it can stop them again, and only them
#   SLURM_UP_TIMEOUT       seconds to wait for slurmctld and then for the node (default 120 each)
#   SLURM_UP_NO_INSTALL=1  never call apt-get (fail if Slurm is missing)
#   SLURM_UP_PMIX=0        do not install libpmix-dev (without it `srun --mpi=pmix` fails: Slurm's pmix
#                          plugin dlopens libpmix.so, which only the -dev package provides); tried only once
# Logs: /var/log/slurm/{slurmctld,slurmd}.log, /var/log/munge/munged.log
set -euo pipefail

TIMEOUT=${SLURM_UP_TIMEOUT:-120}
CONF=/etc/slurm/slurm.conf
STATE=/var/spool/slurmctld
SPOOL=/var/spool/slurmd
LOGDIR=/var/log/slurm
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
MUNGE_KEY=/etc/munge/munge.key

die() {
  echo ".ci/slurm-up.sh: $*" >&2
  exit 1
}
note() { echo ".ci/slurm-up.sh: $*" >&2; }
started() { if [ -n "${SLURM_UP_STARTED:-}" ]; then echo "$1" >>"$SLURM_UP_STARTED"; fi; }

alive() { # alive PID NAME: PID is a live (not zombie) process called NAME
  [ -n "$1" ] && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ] &&
    [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}
pid_of() { # pid_of PIDFILE NAME: the daemon NAME named by the pid file, else any live NAME (started elsewhere)
  local pid p
  pid=$(cat "$1" 2>/dev/null || true)
  if alive "$pid" "$2"; then
    echo "$pid"
    return 0
  fi
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    if alive "$p" "$2"; then
      echo "$p"
      return 0
    fi
  done
  return 1
}
running() { pid_of "$@" >/dev/null; }
stop() { # stop PIDFILE NAME: end that one daemon, wait up to 10 s, then SIGKILL it
  local pid
  pid=$(pid_of "$1" "$2") || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do
    alive "$pid" "$2" || return 0
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  sleep 0.5
}

if [ "${1:-}" = --stop ]; then
  shift
  for daemon in "$@"; do
    case "$daemon" in
      slurmd) stop "$SLURMD_PID" slurmd ;;
      slurmctld) stop "$CTLD_PID" slurmctld ;;
      munged) stop /run/munge/munged.pid munged ;;
      *) die "--stop: unknown daemon '$daemon' (slurmd, slurmctld or munged)" ;;
    esac
    note "stopped $daemon"
  done
  exit 0
fi

[ "$(id -u)" = 0 ] || die "must run as root (it installs packages, writes /etc/slurm and starts daemons)"

# -- packages -----------------------------------------------------------------------------------------------------
have_all() {
  command -v slurmctld && command -v slurmd && command -v sbatch && command -v munged && command -v munge
} >/dev/null 2>&1

restart_slurmd=0
if ! have_all; then
  [ "${SLURM_UP_NO_INSTALL:-0}" = 1 ] && die "slurm-wlm/munge are not installed and SLURM_UP_NO_INSTALL=1"
  command -v apt-get >/dev/null 2>&1 || die "slurm-wlm/munge are not installed and there is no apt-get"
  note "installing slurm-wlm and munge (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  timeout 300 apt-get update -qq >/dev/null 2>&1 || die "apt-get update failed (no package mirror?)"
  timeout 600 apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null 2>&1 ||
    die "apt-get install slurm-wlm munge failed"
  have_all || die "slurm-wlm and munge were installed but slurmctld/slurmd/sbatch/munged are not on PATH"
fi
# srun --mpi=pmix (optional): Slurm's pmix plugin dlopens libpmix.so, which only libpmix-dev ships. Tried once
# (a marker file remembers the attempt), so a machine without a package mirror stays fast on later runs.
PMIX_TRIED=/var/lib/chronompi-slurm-up.pmix-tried
if [ "${SLURM_UP_PMIX:-1}" = 1 ] && [ "${SLURM_UP_NO_INSTALL:-0}" != 1 ] && [ ! -e "$PMIX_TRIED" ] &&
  command -v dpkg-query >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 &&
  ! dpkg-query -W -f '${Status}' libpmix-dev 2>/dev/null | grep -q 'ok installed'; then
  note "installing libpmix-dev (for srun --mpi=pmix)"
  touch "$PMIX_TRIED"
  pmix_install() {
    DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq --no-install-recommends libpmix-dev \
      >/dev/null 2>&1
  }
  if pmix_install || { timeout 300 apt-get update -qq >/dev/null 2>&1 && pmix_install; }; then
    restart_slurmd=1 # slurmd loads the pmix plugin when it starts
  else
    note "warning: apt-get install libpmix-dev failed; srun --mpi=pmix will not work (mpirun does)"
  fi
fi

# -- munge ----------------------------------------------------------------------------------------------------------
id munge >/dev/null 2>&1 || die "there is no 'munge' user (the munge package creates it)"
install -d -m 0700 -o munge -g munge /etc/munge /var/lib/munge /var/log/munge
install -d -m 0755 -o munge -g munge /run/munge
if [ ! -s "$MUNGE_KEY" ]; then
  note "creating $MUNGE_KEY"
  if command -v mungekey >/dev/null 2>&1; then
    mungekey --create --keyfile="$MUNGE_KEY" --force >/dev/null
  else
    dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
  fi
fi
chown munge:munge "$MUNGE_KEY"
chmod 0400 "$MUNGE_KEY"

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
if ! munge_ok; then
  note "starting munged (as user munge)"
  rm -f /run/munge/munged.pid /run/munge/munge.socket.2.lock
  if command -v runuser >/dev/null 2>&1; then
    runuser -u munge -- munged || die "munged did not start (see /var/log/munge/munged.log)"
  else
    su -s /bin/sh munge -c munged || die "munged did not start (see /var/log/munge/munged.log)"
  fi
  started munged
  for _ in $(seq 50); do munge_ok && break; sleep 0.1; done
  munge_ok || die "munged runs but 'munge -n | unmunge' fails (see /var/log/munge/munged.log)"
fi

# -- slurm.conf -----------------------------------------------------------------------------------------------------
HOST=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
[ "${MEM_MB:-0}" -gt 0 ] || MEM_MB=1000
# the node's address: its name if it resolves, else loopback (one node: everything is local)
if getent hosts "$HOST" >/dev/null 2>&1; then ADDR=$HOST; else ADDR=127.0.0.1; fi

install -d -m 0755 /etc/slurm "$STATE" "$SPOOL" "$LOGDIR"
new_conf=$(mktemp)
trap 'rm -f "$new_conf"' EXIT
cat >"$new_conf" <<EOF
# Written by chronompi's .ci/slurm-up.sh: a one-node Slurm for tests (overwritten on every run).
ClusterName=chronompi-ci
SlurmctldHost=$HOST($ADDR)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE
SlurmdSpoolDir=$SPOOL
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SwitchType=switch/none
ReturnToService=2
SlurmdParameters=config_overrides
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
MinJobAge=60
KillWait=5
Waittime=0
NodeName=$HOST NodeAddr=$ADDR CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE OverSubscribe=FORCE:4 State=UP
EOF

conf_changed=0
if ! cmp -s "$new_conf" "$CONF"; then
  install -m 0644 "$new_conf" "$CONF"
  conf_changed=1
fi

# -- daemons --------------------------------------------------------------------------------------------------------
ctld_was=0 slurmd_was=0 # running before this run (a restart below keeps them someone else's)
running "$CTLD_PID" slurmctld && ctld_was=1
running "$SLURMD_PID" slurmd && slurmd_was=1
if [ "$conf_changed" = 1 ]; then
  # a new config (first run, or a new host name / CPU count): restart what runs with the old one
  stop "$SLURMD_PID" slurmd
  stop "$CTLD_PID" slurmctld
elif [ "$restart_slurmd" = 1 ]; then
  stop "$SLURMD_PID" slurmd
fi
if ! running "$CTLD_PID" slurmctld; then
  note "starting slurmctld"
  slurmctld || die "slurmctld did not start (see $LOGDIR/slurmctld.log)"
  [ "$ctld_was" = 1 ] || started slurmctld
fi
for _ in $(seq "$((TIMEOUT * 5))"); do
  scontrol ping 2>/dev/null | grep -q 'is UP' && break
  sleep 0.2
done
scontrol ping 2>/dev/null | grep -q 'is UP' ||
  die "slurmctld does not answer 'scontrol ping' after ${TIMEOUT}s (see $LOGDIR/slurmctld.log)"
if ! running "$SLURMD_PID" slurmd; then
  note "starting slurmd"
  slurmd || die "slurmd did not start (see $LOGDIR/slurmd.log)"
  [ "$slurmd_was" = 1 ] || started slurmd
fi

# -- wait for the node ------------------------------------------------------------------------------------------------
deadline=$((SECONDS + TIMEOUT))
resumed=0
state=""
while :; do
  state=$(sinfo -h -n "$HOST" -o '%t' 2>/dev/null | head -n 1)
  case "$state" in
    idle | mix | alloc) break ;; # comp (a job still completing) waits: it cannot take a job yet
    down* | drain* | drng* | fail*)
      if [ "$resumed" = 0 ]; then # left down by an earlier run (e.g. slurmd restarted): bring it back once
        scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true
        resumed=1
      fi
      ;;
  esac
  if [ "$SECONDS" -ge "$deadline" ]; then
    reason=$(sinfo -h -n "$HOST" -o '%E' 2>/dev/null | head -n 1)
    die "node $HOST is not up after ${TIMEOUT}s: state '${state:-none}' reason '${reason:-none}' (see $LOGDIR/)"
  fi
  sleep 0.2
done
echo "slurm up: node $HOST ($CPUS CPUs, ${MEM_MB} MB) state $state, partition debug"
