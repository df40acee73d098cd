#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the tests of `zoo compare --executor slurm` (tests/test_slurm.py).
#
# As root: writes /etc/slurm/slurm.conf for this host (its CPUs and memory, one partition "zoo"), makes a
# munge key when there is none, starts munged, slurmctld and slurmd, and waits until `sinfo` shows the
# node idle. Idempotent: run again, it leaves a running cluster alone (and restarts the daemons only when
# the configuration it would write differs from the one in place). Needs Debian's slurm-wlm and munge.
# Settings chosen for fast tests: linuxproc process tracking (no cgroups in containers), no task
# plugin, cons_tres selection with CPUs and memory as consumables (a job without --mem gets a share, not
# the whole node), jobs forgotten 30 s after they end,
# a short KillWait, a scheduler that looks at new jobs at once.
set -euo pipefail

[ "$(id -u)" = 0 ] || { echo "slurm-up.sh: must run as root" >&2; exit 1; }
for bin in munged slurmctld slurmd sinfo; do
    command -v "$bin" >/dev/null 2>&1 || { echo "slurm-up.sh: $bin missing: apt-get install slurm-wlm munge" >&2; exit 1; }
done

host=$(hostname -s)
cpus=$(nproc --all)
mem_mb=$(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo)
mem_mb=$((mem_mb > 1024 ? mem_mb - 512 : mem_mb))  # leave the system some room
conf_dir=/etc/slurm
conf=$conf_dir/slurm.conf
mkdir -p "$conf_dir" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /var/lib/munge /var/log/munge

new_conf=$(cat <<EOF
# written by caption-zoo .ci/slurm-up.sh: a one-node cluster on this machine
ClusterName=zoo
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_min_interval=0,defer_batch=0
ReturnToService=2
MinJobAge=30
KillWait=3
InactiveLimit=0
MessageTimeout=10
JobRequeue=1
MpiDefault=none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
DefMemPerCPU=$((mem_mb / cpus / 2))
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=zoo Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
)

restart=0
if [ ! -f "$conf" ] || [ "$(cat "$conf")" != "$new_conf" ]; then
    printf '%s\n' "$new_conf" > "$conf"
    restart=1
fi

# munge: a key readable by munge's daemon only; made once
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
if id munge >/dev/null 2>&1; then
    chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
fi
chmod 0400 /etc/munge/munge.key
chmod 0755 /run/munge
if ! pgrep -x munged >/dev/null; then
    if id munge >/dev/null 2>&1; then
        runuser -u munge -- munged
    else
        munged --force
    fi
fi

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if [ "$restart" = 1 ]; then
    for pidfile in /run/slurmd.pid /run/slurmctld.pid; do
        if running "$pidfile"; then kill "$(cat "$pidfile")"; sleep 1; fi
    done
fi
running /run/slurmctld.pid || slurmctld
running /run/slurmd.pid || slurmd

for _ in $(seq 1 60); do
    state=$(sinfo -h -n "$host" -o '%T' 2>/dev/null || true)
    case "$state" in
        idle*|mixed*|allocated*) echo "slurm-up.sh: node $host is $state (partition zoo, $cpus CPUs, ${mem_mb} MB)"; exit 0 ;;
        down*|drain*) scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 1
done
echo "slurm-up.sh: the node did not become idle in 60 s; see /var/log/slurm/slurmctld.log and slurmd.log" >&2
sinfo >&2 || true
exit 1
