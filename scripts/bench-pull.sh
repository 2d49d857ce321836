#!/usr/bin/env bash
# Measures `stockade image pull` of a multi-layer image from a local registry: Debian's
# docker-registry on 127.0.0.1 (plain HTTP, basic auth), an image of LAYERS gzip layers of
# LAYER_MIB MiB of random bytes each (as a docker-save tarball, imported, pushed, removed),
# then RUNS pulls, each into a fresh containerd namespace so that every layer is
# downloaded, unpacked and committed. Prints one line per pull with its wall time.
#
#   sudo scripts/bench-pull.sh [STOCKADE_BINARY]     (LAYERS=6 LAYER_MIB=4 RUNS=3 by default)
set -euo pipefail

bin=${1:-stockade}
layers=${LAYERS:-6}
mib=${LAYER_MIB:-4}
runs=${RUNS:-3}
work=$(mktemp -d /var/tmp/stockade-bench-pull.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
host=127.0.0.1:$port
registry_pid=
cleanup() {
  set +e
  if [[ -n $registry_pid ]]; then kill "$registry_pid" 2>/dev/null; wait "$registry_pid" 2>/dev/null; fi
  for ns in $(seq 1 "$runs"); do "$bin" image rm "$host/bench:1" --namespace "bench-pull-$ns" >/dev/null 2>&1 || true; done
  "$bin" image rm "$host/bench:1" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

python3 - "$work" "$layers" "$mib" <<'EOF'
import hashlib, io, json, os, sys, tarfile, gzip
work, layers, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def tar_of(name, data):
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w", format=tarfile.USTAR_FORMAT) as t:
        i = tarfile.TarInfo(name); i.size = len(data); i.mode = 0o644
        t.addfile(i, io.BytesIO(data))
    return b.getvalue()
files, diff_ids, names = {}, [], []
for n in range(layers):
    tar = tar_of(f"layer{n}.bin", os.urandom(mib << 20))
    diff_ids.append("sha256:" + hashlib.sha256(tar).hexdigest())
    files[f"l{n}/layer.tar"] = gzip.compress(tar, compresslevel=1)
    names.append(f"l{n}/layer.tar")
config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                     "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
files["config.json"] = config
files["manifest.json"] = json.dumps([{"Config": "config.json", "RepoTags": ["bench:1"],
                                      "Layers": names}]).encode()
with tarfile.open(os.path.join(work, "image.tar"), "w") as t:
    for name, data in files.items():
        i = tarfile.TarInfo(name); i.size = len(data); i.mode = 0o644
        t.addfile(i, io.BytesIO(data))
EOF

htpasswd=$(python3 -W ignore -c 'import crypt; print(crypt.crypt("bench", crypt.mksalt(crypt.METHOD_BLOWFISH)))')
echo "bench:$htpasswd" >"$work/htpasswd"
cat >"$work/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $work/data
http:
  addr: $host
auth:
  htpasswd:
    realm: bench
    path: $work/htpasswd
EOF
docker-registry serve "$work/config.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done

creds=(--username bench --password-stdin --plain-http "$host")
"$bin" image import "$work/image.tar" --name "$host/bench:1" >/dev/null
echo bench | "$bin" image push "$host/bench:1" "${creds[@]}" >/dev/null
"$bin" image rm "$host/bench:1" >/dev/null
size=$(du -sm "$work/data" | cut -f1)
for ns in $(seq 1 "$runs"); do
  start=$(date +%s.%N)
  echo bench | "$bin" image pull "$host/bench:1" "${creds[@]}" --namespace "bench-pull-$ns" >/dev/null 2>&1
  end=$(date +%s.%N)
  printf 'pull %d: %d layers x %d MiB (%d MiB in the registry): %.2f s\n' \
    "$ns" "$layers" "$mib" "$size" "$(awk "BEGIN{print $end - $start}")"
  "$bin" image rm "$host/bench:1" --namespace "bench-pull-$ns" >/dev/null
done
