#!/usr/bin/env bash
# A real single-node SLURM cluster on this Debian/Ubuntu machine, for trying prune_lab's SLURM launcher and
# for its `slurm` tests. FOR TESTING ONLY: run as root on a throwaway machine or container; it installs
# packages, writes /etc/slurm and starts daemons (no systemd needed).
#
#   sudo slurm/start_local_cluster.sh          # idempotent: returns at once when the cluster already answers
#   sudo slurm/start_local_cluster.sh --stop   # stop the daemons it started
#
# What it sets up: munge, a private MariaDB on 127.0.0.1 for slurmdbd (submitit polls `sacct`; without
# accounting a job that dies without a result makes submitit wait forever), slurmctld, and slurmd as node
# `localhost` advertising $PRUNE_LAB_SLURM_CPUS CPUs and two fake GPUs (character devices, GRES `gpu`), in
# partitions `cpu` (default) and `gpu`. State and logs go to $PRUNE_LAB_SLURM_STATE.
set -euo pipefail

STATE=${PRUNE_LAB_SLURM_STATE:-/var/tmp/prune_lab_slurm}
CPUS=${PRUNE_LAB_SLURM_CPUS:-8}          # more than the machine has (config_overrides): small jobs run side by side
MEM_MB=${PRUNE_LAB_SLURM_MEM_MB:-64000}  # advertised, so the profiles' --mem requests fit
DB_PORT=3399                             # private MariaDB, 127.0.0.1 only, away from a system one on 3306
CLUSTER=prunelab
PACKAGES=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server)

log() { echo "start_local_cluster: $*" >&2; }
die() { log "error: $*"; exit 1; }

cluster_ready() {  # the controller answers, the node is usable and accounting works
    local state
    state=$(timeout 10 sinfo -h -n localhost -o %t 2>/dev/null | head -n1) || return 1
    [[ $state =~ ^(idle|mix|alloc|comp)$ ]] || return 1
    timeout 10 sacct -n -X -S now-1minutes >/dev/null 2>&1
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...
    local secs=$1 what=$2; shift 2
    for _ in $(seq "$((secs * 2))"); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    die "$what did not come up within ${secs}s; see the logs in $STATE/log"
}

stop_cluster() {
    for name in slurmd slurmctld slurmdbd mariadb; do
        if [[ -f $STATE/run/$name.pid ]]; then
            kill "$(cat "$STATE/run/$name.pid")" 2>/dev/null || true
            rm -f "$STATE/run/$name.pid"
        fi
    done
    log "stopped (munged left running)"
}

slurm_conf() {
    cat <<EOF
# written by prune_lab slurm/start_local_cluster.sh (single-node test cluster; not for production)
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
# short-lived credentials: a requeued job may start again after ~10 s instead of ~120 s
AuthInfo=cred_expire=10
# no cgroups in a container
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=2,sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# the node may advertise more CPUs than the machine has
SlurmdParameters=config_overrides
ReturnToService=2
# seconds between SIGTERM and SIGKILL when a job is cancelled, requeued or preempted
KillWait=2
MinJobAge=300
InactiveLimit=0
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
# GPUs in sacct's AllocTRES
AccountingStorageTRES=gres/gpu
JobCompType=jobcomp/none
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB Gres=gpu:2 State=UNKNOWN
PartitionName=cpu Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=localhost MaxTime=INFINITE State=UP
EOF
}

gres_conf() {
    cat <<EOF
# fake GPUs for the test cluster: --gres=gpu:1 sets CUDA_VISIBLE_DEVICES but there is no GPU behind it
AutoDetect=off
NodeName=localhost Name=gpu File=$STATE/dev/gpu[0-1]
EOF
}

if [[ ${1:-} == --stop ]]; then stop_cluster; exit 0; fi
[[ $(id -u) == 0 ]] || die "must run as root (it installs packages and starts system daemons); it is for test machines only"

if command -v sinfo >/dev/null && cluster_ready && [[ "$(slurm_conf)" == "$(cat /etc/slurm/slurm.conf)" ]] \
        && [[ "$(gres_conf)" == "$(cat /etc/slurm/gres.conf)" ]]; then
    log "cluster already up (sinfo: node localhost ready; sacct answers; configuration unchanged)"
    exit 0
fi

# --- packages ------------------------------------------------------------------------------------------
missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    command -v apt-get >/dev/null || die "apt-get not found: this script needs Debian/Ubuntu (missing: ${missing[*]})"
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >"/tmp/prune_lab_slurm_apt.log" 2>&1; then
        apt-get update -q >>"/tmp/prune_lab_slurm_apt.log" 2>&1
        apt-get install -y -q --no-install-recommends "${missing[@]}" >>"/tmp/prune_lab_slurm_apt.log" 2>&1 \
            || die "apt-get install ${missing[*]} failed; see /tmp/prune_lab_slurm_apt.log"
    fi
fi

mkdir -p "$STATE"/{log,run,ctld,spool,dev} /etc/slurm
DB_PASS_FILE=$STATE/dbpass
[[ -s $DB_PASS_FILE ]] || (umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$DB_PASS_FILE")
DB_PASS=$(cat "$DB_PASS_FILE")

# --- munge ---------------------------------------------------------------------------------------------
if [[ ! -s /etc/munge/munge.key ]]; then
    if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key
    else dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; fi
fi
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge && chown munge:munge /run/munge /var/log/munge /var/lib/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged
    wait_for 10 munged sh -c 'munge -n | unmunge'
fi

# --- MariaDB for slurmdbd (private datadir, 127.0.0.1:$DB_PORT) ----------------------------------------
MYSQL=(mariadb --protocol=socket --socket="$STATE/run/mysql.sock" -uroot)
if ! "${MYSQL[@]}" -e 'select 1' >/dev/null 2>&1; then
    if [[ ! -d $STATE/mysql/mysql ]]; then
        log "initialising MariaDB in $STATE/mysql"
        mkdir -p "$STATE/mysql" && chown mysql:mysql "$STATE/mysql"
        mariadb-install-db --user=mysql --datadir="$STATE/mysql" --auth-root-authentication-method=socket \
            >"$STATE/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed; see $STATE/log/mariadb-install.log"
    fi
    chown mysql:mysql "$STATE/run" 2>/dev/null || true
    log "starting MariaDB"
    (mariadbd --user=mysql --datadir="$STATE/mysql" --socket="$STATE/run/mysql.sock" --port=$DB_PORT \
        --bind-address=127.0.0.1 --pid-file="$STATE/run/mariadb.pid" --log-error="$STATE/log/mariadb.log" \
        --innodb-buffer-pool-size=64M --skip-log-bin >/dev/null 2>&1 &)
    wait_for 60 MariaDB "${MYSQL[@]}" -e 'select 1'
fi
"${MYSQL[@]}" -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"

# --- configuration -------------------------------------------------------------------------------------
for i in 0 1; do  # fake GPUs: slurmd accepts only character devices as GRES files (these are /dev/null's)
    [[ -c $STATE/dev/gpu$i ]] || { rm -f "$STATE/dev/gpu$i"; mknod "$STATE/dev/gpu$i" c 1 3; }
done

cat >/etc/slurm/slurmdbd.conf <<EOF
# written by prune_lab slurm/start_local_cluster.sh (test cluster)
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
chmod 600 /etc/slurm/slurmdbd.conf

changed=0
for name in slurm gres; do
    if [[ "$(${name}_conf)" != "$(cat "/etc/slurm/$name.conf" 2>/dev/null)" ]]; then
        "${name}_conf" >"/etc/slurm/$name.conf"
        changed=1
    fi
done

alive() { [[ -f $STATE/run/$1.pid ]] && kill -0 "$(cat "$STATE/run/$1.pid")" 2>/dev/null; }

# --- daemons -------------------------------------------------------------------------------------------
if ((changed)); then  # a new slurm.conf or gres.conf: restart the controller and the node daemon with it
    for name in slurmd slurmctld; do
        if alive "$name"; then
            log "restarting $name for the new configuration"
            pid=$(cat "$STATE/run/$name.pid"); kill "$pid"
            for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        fi
    done
fi
if ! alive slurmdbd; then
    log "starting slurmdbd"
    slurmdbd
    wait_for 30 slurmdbd sacctmgr -n list cluster
fi
sacctmgr -i -Q add cluster "$CLUSTER" >/dev/null 2>&1 || true  # fails harmlessly when it exists
if alive slurmctld; then
    scontrol reconfigure >/dev/null 2>&1 || true
else
    log "starting slurmctld"
    slurmctld
    wait_for 30 slurmctld scontrol ping
fi
if ! alive slurmd; then
    log "starting slurmd (node localhost)"
    slurmd -N localhost
fi
for _ in $(seq 60); do
    state=$(sinfo -h -n localhost -o %t 2>/dev/null | head -n1 || true)
    [[ $state =~ ^(idle|mix|alloc)$ ]] && break
    [[ $state =~ (down|drain) ]] && scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true
    sleep 0.5
done
cluster_ready || die "node localhost is not ready (sinfo: '${state:-none}'); see $STATE/log/slurmd.log and slurmctld.log"
log "cluster up: partitions cpu (default) and gpu, node localhost ($CPUS CPUs, 2 fake GPUs); logs in $STATE/log"
