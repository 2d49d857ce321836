#!/usr/bin/env bash
# `docker run --rm --network none busybox true` through `stockade serve` against the same
# through a private dockerd (Debian's docker.io), both over one private containerd, runs
# interleaved so that both see the same machine; prints p50 and p90 of each. Then the
# server's memory: VmRSS of `stockade serve` after 20 and after MEM_N containers.
#
#   scripts/bench-docker-api.sh [RUNS]          (root; default 20 runs of each)
#
# STOCKADE (default `stockade`), DOCKER (the client, default `docker`), DOCKERD (default:
# `dockerd` on PATH, else taken out of Debian's docker.io package, downloaded with
# `apt-get download`, never installed), MEM_N (default 200). Everything lives under one
# temporary directory: both daemons are stopped by PID and whatever they left mounted there
# is unmounted before it is removed. Numbers only: nothing here asserts a speed.
set -euo pipefail

runs=${1:-20}
mem_n=${MEM_N:-200}
stockade=${STOCKADE:-stockade}
docker=${DOCKER:-docker}
[[ $(id -u) == 0 ]] || { echo "bench-docker-api: must run as root" >&2; exit 125; }
((runs >= 2)) || { echo "bench-docker-api: RUNS must be at least 2" >&2; exit 125; }

work=$(mktemp -d /tmp/stkbench-XXXXXX)
serve_pid=
dockerd_pid=
stop_pid() {
    local pid=$1
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
    stop_pid "$serve_pid"
    stop_pid "$dockerd_pid"
    "$stockade" daemon stop --base "$work/ctd" >/dev/null 2>&1 || true
    # Deepest first.
    awk -v w="$work" '$5 ~ "^"w {print $5}' /proc/self/mountinfo | sort -r |
        while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

dockerd=${DOCKERD:-$(command -v dockerd || true)}
if [[ -z $dockerd ]]; then
    mkdir -p "$work/pkg"
    (cd "$work/pkg" && apt-get download -qq docker.io >/dev/null 2>&1)
    dpkg-deb --fsys-tarfile "$work"/pkg/docker.io_*.deb | tar -x -C "$work/pkg" ./usr/sbin/dockerd
    dockerd=$work/pkg/usr/sbin/dockerd
fi

wait_socket() {
    for _ in $(seq 600); do
        [[ -S $1 ]] && DOCKER_HOST=unix://$1 "$docker" version >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "bench-docker-api: nothing answers on $1" >&2
    exit 1
}

"$stockade" daemon start --base "$work/ctd" >/dev/null
ctd=$work/ctd/state/containerd.sock
"$stockade" image build busybox --address "$ctd" >/dev/null 2>&1
"$stockade" image tag stockade/busybox busybox --address "$ctd" >/dev/null

"$stockade" serve --docker-socket "$work/stockade.sock" --address "$ctd" \
    --fifo-root "$work/fifo" 2>"$work/serve.log" &
serve_pid=$!
wait_socket "$work/stockade.sock"
S=unix://$work/stockade.sock

# The same image for dockerd: saved through stockade (an OCI layout), with the
# manifest.json that older dockerd's `docker load` reads.
DOCKER_HOST=$S "$docker" save -o "$work/busybox.tar" busybox
python3 - "$work/busybox.tar" <<'EOF'
import io, json, sys, tarfile
path = sys.argv[1]
with tarfile.open(path) as t:
    index = json.load(t.extractfile("index.json"))
    digest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.load(t.extractfile("blobs/sha256/" + digest))
doc = json.dumps([{
    "Config": "blobs/sha256/" + manifest["config"]["digest"].split(":")[1],
    "RepoTags": ["busybox:latest"],
    "Layers": ["blobs/sha256/" + l["digest"].split(":")[1] for l in manifest["layers"]],
}]).encode()
with tarfile.open(path, "a") as t:
    info = tarfile.TarInfo("manifest.json")
    info.size = len(doc)
    t.addfile(info, io.BytesIO(doc))
EOF

"$dockerd" --data-root "$work/dockerd-data" --exec-root "$work/dockerd-exec" \
    --pidfile "$work/dockerd.pid" -H "unix://$work/dockerd.sock" --containerd "$ctd" \
    --bridge none --iptables=false --ip6tables=false >"$work/dockerd.log" 2>&1 &
dockerd_pid=$!
wait_socket "$work/dockerd.sock"
D=unix://$work/dockerd.sock
DOCKER_HOST=$D "$docker" load -q -i "$work/busybox.tar" >/dev/null

one() { # HOST → milliseconds of one run
    local t0 t1
    t0=$(date +%s%N)
    DOCKER_HOST=$1 "$docker" run --rm --network none busybox true 2>/dev/null
    t1=$(date +%s%N)
    echo $(((t1 - t0) / 1000000))
}
# One unmeasured run each (first use of the image).
one "$S" >/dev/null
one "$D" >/dev/null
: >"$work/s.ms"
: >"$work/d.ms"
for _ in $(seq "$runs"); do
    one "$S" >>"$work/s.ms"
    one "$D" >>"$work/d.ms"
done
pct() { # FILE PERCENT
    sort -n "$1" | awk -v p="$2" '{v[NR]=$1} END {i=int((NR-1)*p/100)+1; print v[i]}'
}
echo "# docker run --rm --network none busybox true, $runs interleaved runs each (ms)"
printf '%-16s p50 %5s  p90 %5s\n' "stockade serve" "$(pct "$work/s.ms" 50)" "$(pct "$work/s.ms" 90)"
printf '%-16s p50 %5s  p90 %5s\n' "dockerd $("$dockerd" --version | awk '{print $3}' | tr -d ,)" \
    "$(pct "$work/d.ms" 50)" "$(pct "$work/d.ms" 90)"

rss() { awk '/^VmRSS/ {print $2}' "/proc/$serve_pid/status"; }
done_n=$((runs + 1))
while ((done_n < 20)); do DOCKER_HOST=$S "$docker" run --rm --network none busybox true 2>/dev/null; done_n=$((done_n + 1)); done
rss20=$(rss)
while ((done_n < mem_n)); do DOCKER_HOST=$S "$docker" run --rm --network none busybox true 2>/dev/null; done_n=$((done_n + 1)); done
rssn=$(rss)
echo "# stockade serve VmRSS after 20 containers: ${rss20} kB; after $mem_n: ${rssn} kB"
