#!/bin/sh
# The one command: install the Debian tools if missing, then run the whole bench within a
# hard time bound. Arguments go to bench/run.py (e.g. --seconds 5 --rounds 2); with `kubeadm`
# first, the rest go to bench/kubeadm.py (kubeadm's Corefile against NSD and dnsdist).
# BENCH_TIMEOUT (seconds, default 1800) bounds everything; the module's own --budget is tighter.
set -eu
cd "$(dirname "$0")/.."

module=bench.run
if [ "${1:-}" = kubeadm ]; then
    shift
    module=bench.kubeadm
fi

need=""
command -v dnsperf >/dev/null 2>&1 || need="$need dnsperf"
command -v knotd >/dev/null 2>&1 || need="$need knot"
command -v nsd >/dev/null 2>&1 || need="$need nsd"
command -v dig >/dev/null 2>&1 || need="$need bind9-dnsutils"
command -v taskset >/dev/null 2>&1 || need="$need util-linux"
if [ "$module" = bench.kubeadm ]; then
    command -v dnsdist >/dev/null 2>&1 || need="$need dnsdist"
fi
if [ -n "$need" ]; then
    echo "installing:$need"
    sudo_=""
    [ "$(id -u)" -eq 0 ] || sudo_="sudo"
    timeout 600 $sudo_ apt-get install -y $need
fi

py=.venv/bin/python
[ -x "$py" ] || py=python3
# Debian's knot, nsd and dnsdist packages start system daemons on port 53; they are not ours
# to stop, and the bench never uses port 53, so they are left alone.
exec timeout --kill-after=10 "${BENCH_TIMEOUT:-1800}" "$py" -m "$module" "$@"
