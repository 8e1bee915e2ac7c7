#!/usr/bin/env bash
# Stop the single-node Slurm started by tests/slurm/start.sh (slurmd,
# slurmctld, munged), by pid file.  Missing pid files / dead processes are
# ignored.  The config (/etc/slurm/slurm.conf) and saved state are left alone.
set -uo pipefail

# stop PIDFILE NAME
stop() {
    local f=$1 name=$2 pid
    [ -s "$f" ] || { echo "stop.sh: $name: no pid file" >&2; return 0; }
    pid=$(tr -dc '0-9' <"$f")
    if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null \
        || [ "$(cat /proc/"$pid"/comm 2>/dev/null)" != "$name" ]; then
        echo "stop.sh: $name: not running" >&2
        rm -f "$f"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || { echo "stop.sh: $name ($pid) stopped" >&2; rm -f "$f"; return 0; }
        sleep 0.1
    done
    echo "stop.sh: $name ($pid) ignored SIGTERM for 10s; SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$f"
}

stop /run/slurmd.pid slurmd
stop /run/slurmctld.pid slurmctld
stop /run/munge/munged.pid munged
exit 0
