#!/usr/bin/env bash
# A real single-node SLURM for Lynx's tests, on a Debian machine, as root, without systemd.
#
#   test/slurm/cluster.sh start    install the packages if needed, start munged, slurmctld and slurmd,
#                                  and wait until a job really runs (does nothing if the cluster is up)
#   test/slurm/cluster.sh stop     end exactly the daemons 'start' started (by their pid files)
#   test/slurm/cluster.sh status   exit 0 if all three daemons are alive and a job runs
#
# Everything lives under $LYNX_SLURM_DIR (default /tmp/lynx-slurm): slurm.conf, pid files, logs,
# state. Client commands (srun, squeue, ...) find the config through /etc/slurm/slurm.conf, which
# 'start' links to ours when the machine has none, or through SLURM_CONF (see 'env').
#   test/slurm/cluster.sh env      print 'export SLURM_CONF=...' for this cluster
set -euo pipefail

STATE="${LYNX_SLURM_DIR:-/tmp/lynx-slurm}"
NODE="${LYNX_SLURM_NODE:-lynx1}"
CPUS="${LYNX_SLURM_CPUS:-8}"
CTLD_PORT="${LYNX_SLURM_CTLD_PORT:-6817}"
SLURMD_PORT="${LYNX_SLURM_SLURMD_PORT:-6818}"
CONF="$STATE/slurm.conf"
SOCKET="$STATE/munge/munge.socket.2"
SYSTEM_CONF=/etc/slurm/slurm.conf
READY_TIMEOUT=90
export SLURM_CONF="$CONF"

say() { echo "cluster.sh: $*" >&2; }
die() {
    say "$*"
    exit 1
}

# alive PIDFILE: the process in PIDFILE exists and is not a zombie.
alive() {
    local pid state
    [[ -s "$1" ]] || return 1
    pid="$(tr -dc '0-9' <"$1")"
    [[ -n "$pid" && -r "/proc/$pid/stat" ]] || return 1
    # The third field of /proc/PID/stat is the state; the name before it is in parentheses and
    # may contain spaces, so take what follows the last ')'.
    state="$(sed -e 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
    [[ -n "$state" && "$state" != Z && "$state" != X ]]
}

pid_of() { tr -dc '0-9' <"$1"; }

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v srun >/dev/null &&
        command -v munged >/dev/null; then
        return
    fi
    [[ $EUID -eq 0 ]] || die "SLURM is not installed and installing it needs root"
    say "installing slurmctld slurmd slurm-client munge (Debian packages)"
    # Without an init system the packages must not try to start their daemons during the install.
    local made_policy=""
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null
    [[ -z "$made_policy" ]] || rm -f /usr/sbin/policy-rc.d
}

ensure_munge_key() {
    local key=/etc/munge/munge.key
    [[ -s "$key" ]] && return
    say "creating the munge key $key"
    mkdir -p /etc/munge
    dd if=/dev/urandom of="$key" bs=1024 count=1 status=none
    chown munge:munge "$key"
    chmod 400 "$key"
}

write_conf() {
    local memory
    memory="$(slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -1)"
    memory="${memory:-1000}"
    cat >"$CONF.new" <<EOF
# Written by Lynx's test/slurm/cluster.sh: a single-node cluster without cgroups or accounting.
ClusterName=lynx
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/log/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
SchedulerParameters=batch_sched_delay=0
MinJobAge=5
JobRequeue=0
MailProg=/bin/true
ReturnToService=2
NodeName=$NODE NodeHostname=$(hostname -s) NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$CONF.new" "$CONF"
}

link_system_conf() {
    # Let srun, squeue and scancel find this cluster without SLURM_CONF, unless the machine has its own.
    if [[ -L "$SYSTEM_CONF" && "$(readlink "$SYSTEM_CONF")" == "$CONF" ]]; then
        return
    fi
    if [[ -e "$SYSTEM_CONF" || -L "$SYSTEM_CONF" ]]; then
        say "$SYSTEM_CONF exists: run 'export SLURM_CONF=$CONF' to use this cluster"
        return
    fi
    mkdir -p "$(dirname "$SYSTEM_CONF")"
    ln -s "$CONF" "$SYSTEM_CONF"
}

start_munged() {
    alive "$STATE/munge/munged.pid" && return
    install -d -o munge -g munge -m 0755 "$STATE/munge"
    runuser -u munge -- /usr/sbin/munged --socket="$SOCKET" --pid-file="$STATE/munge/munged.pid" \
        --log-file="$STATE/munge/munged.log" --seed-file="$STATE/munge/munged.seed" ||
        die "munged did not start; see $STATE/munge/munged.log"
    local i
    for i in $(seq 100); do
        munge -S "$SOCKET" -n 2>/dev/null | unmunge -S "$SOCKET" >/dev/null 2>&1 && return
        sleep 0.1
    done
    die "munged does not answer on $SOCKET; see $STATE/munge/munged.log"
}

start_slurmctld() {
    alive "$STATE/run/slurmctld.pid" && return
    slurmctld -f "$CONF" || die "slurmctld did not start; see $STATE/log/slurmctld.log"
}

start_slurmd() {
    alive "$STATE/run/slurmd.pid" && return
    slurmd -f "$CONF" -N "$NODE" || die "slurmd did not start; see $STATE/log/slurmd.log"
}

# A node that was down or drained when the daemons last stopped comes back.
resume_node() {
    local state
    state="$(sinfo -h -n "$NODE" -o %t 2>/dev/null || true)"
    case "$state" in
    *drain* | *down* | *drng* | *fail*) scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true ;;
    esac
}

# "Idle in sinfo" is not ready: only a job that has run is.
job_runs() { timeout 20 srun --quiet --job-name=cluster.sh:ready --time=1 true >/dev/null 2>&1; }

daemons_alive() {
    alive "$STATE/munge/munged.pid" && alive "$STATE/run/slurmctld.pid" && alive "$STATE/run/slurmd.pid"
}

start() {
    if daemons_alive && job_runs; then
        say "already up (state in $STATE)"
        return
    fi
    install_packages
    ensure_munge_key
    mkdir -p "$STATE"/{ctld,slurmd,run,log}
    # Rewriting the config of a running controller would change nothing until it restarts.
    alive "$STATE/run/slurmctld.pid" || write_conf
    link_system_conf
    start_munged
    start_slurmctld
    start_slurmd
    local deadline=$((SECONDS + READY_TIMEOUT))
    until job_runs; do
        resume_node
        ((SECONDS < deadline)) || die "no job ran within ${READY_TIMEOUT} s; see the logs in $STATE/log"
        daemons_alive || die "a daemon has died; see the logs in $STATE/log and $STATE/munge"
        sleep 0.5
    done
    say "up: node $NODE with $CPUS CPUs, partition debug (state in $STATE)"
}

# stop_daemon NAME PIDFILE: SIGTERM the process in PIDFILE, SIGKILL it after 15 s.
stop_daemon() {
    local name="$1" pidfile="$2" pid i
    if ! alive "$pidfile"; then
        rm -f "$pidfile"
        return
    fi
    pid="$(pid_of "$pidfile")"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 150); do
        alive "$pidfile" || break
        sleep 0.1
    done
    if alive "$pidfile"; then
        say "$name (PID $pid) did not exit within 15 s of SIGTERM: killing it"
        kill -KILL "$pid" 2>/dev/null || true
        for i in $(seq 50); do
            alive "$pidfile" || break
            sleep 0.1
        done
    fi
    rm -f "$pidfile"
}

stop() {
    stop_daemon slurmd "$STATE/run/slurmd.pid"
    stop_daemon slurmctld "$STATE/run/slurmctld.pid"
    stop_daemon munged "$STATE/munge/munged.pid"
    if [[ -L "$SYSTEM_CONF" && "$(readlink "$SYSTEM_CONF")" == "$CONF" ]]; then
        rm -f "$SYSTEM_CONF"
    fi
    say "stopped"
}

status() {
    local name pidfile ok=0
    for name in munged slurmctld slurmd; do
        case "$name" in
        munged) pidfile="$STATE/munge/munged.pid" ;;
        *) pidfile="$STATE/run/$name.pid" ;;
        esac
        if alive "$pidfile"; then
            echo "$name: running (PID $(pid_of "$pidfile"))"
        else
            echo "$name: not running"
            ok=1
        fi
    done
    if ((ok == 0)) && job_runs; then
        echo "jobs run: yes"
    else
        echo "jobs run: no"
        ok=1
    fi
    return "$ok"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) status ;;
env) echo "export SLURM_CONF=$CONF" ;;
*)
    echo "usage: $0 start|stop|status|env" >&2
    exit 2
    ;;
esac
