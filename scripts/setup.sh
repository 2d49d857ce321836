#!/usr/bin/env bash
# Installs what stockade needs on a Debian 12 host, builds it, and builds the busybox base
# image. Safe to run again: every step is skipped when already done.
#
#   sudo scripts/setup.sh            # install, build, build the busybox image
#   sudo scripts/setup.sh --no-image # install and build only
set -euo pipefail
cd "$(dirname "$0")/.."

want_image=1
for a in "$@"; do
  case "$a" in
    --no-image) want_image=0 ;;
    *) echo "setup.sh: unknown argument $a" >&2; exit 2 ;;
  esac
done

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
  echo "setup.sh: run as root (containers, cgroups and containerd need it)" >&2
  exit 1
fi

# Debian packages: the runtime (containerd, runc; crun for `--runc-binary crun`), the build (protoc for containerd's
# protos, libseccomp for the filters), the base images (busybox-static, mmdebstrap), the
# AppArmor parser (profiles are syntax-checked even where the kernel lacks AppArmor), and
# the tools the tests use (iproute2 for network namespaces, python3-jsonschema), and the
# disk limit's (e2fsprogs for mkfs.ext4, util-linux and mount for losetup and loop mounts);
# libc6-dev for libc.a, which build.rs links the sandbox init against statically;
# docker-registry (a real OCI registry the pull/push tests start on 127.0.0.1), openssl
# (their self-signed certificate) and zstd (their zstd-compressed layer); nftables (nft),
# iproute2 (ip) and util-linux (nsenter) for `--network egress`;
# python3-venv for the tests' Python venv below; containernetworking-plugins (the CNI
# bridge, host-local and loopback plugins in /usr/lib/cni) for the CRI proof of the
# rendered pod (tests/k8s_cri.rs).
packages=(containerd runc crun protobuf-compiler libprotobuf-dev libseccomp-dev pkg-config
          busybox-static mmdebstrap apparmor iproute2 python3 python3-jsonschema
          ca-certificates e2fsprogs util-linux mount libc6-dev docker-registry openssl zstd
          nftables python3-venv containernetworking-plugins)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# docker-registry's Debian service would listen on :5000 for every host interface: the
# tests start their own instances on 127.0.0.1, so the system one stays disabled and stopped.
if [[ -e /lib/systemd/system/docker-registry.service ]] && command -v systemctl >/dev/null; then
  if systemctl is-enabled --quiet docker-registry 2>/dev/null; then
    log "disabling the docker-registry system service"
    systemctl disable docker-registry >/dev/null 2>&1 || true
  fi
  if [[ -d /run/systemd/system ]] && systemctl is-active --quiet docker-registry; then
    systemctl stop docker-registry
  fi
fi

# A Docker client for the tests of `stockade serve` (tests/docker_api.rs). Debian 12 has
# no client-only package: the client is taken out of `docker.io`'s .deb (downloaded, not
# installed, so no dockerd, service or firewall rule comes with it). Kept when any docker
# client is already on the machine.
if ! command -v docker >/dev/null && [[ ! -x /usr/local/bin/docker ]]; then
  log "extracting the docker client from Debian's docker.io"
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -qq docker.io >/dev/null)
  dpkg-deb --fsys-tarfile "$tmp"/docker.io_*.deb | tar -x -C "$tmp" ./usr/bin/docker
  install -m 0755 "$tmp/usr/bin/docker" /usr/local/bin/docker
  rm -rf "$tmp"
fi

# One Python venv for every PyPI package the tests use, one package a line:
# kubernetes-validate: Kubernetes' own JSON schemas, offline (tests/k8s_validate.rs).
# docker: the Python Docker SDK, driven against `stockade serve` (tests/docker_py.rs).
# schemathesis: fuzzes `stockade serve --http` from its OpenAPI document (tests/http_api.rs).
# httpx, pytest, pytest-asyncio, mypy, hatchling: the Python client (clients/python) is
#   installed from the tree without the network (hatchling builds it, httpx is its one
#   dependency), typed under mypy --strict and its tests run (tests/python_client.rs).
# mcp: the MCP client library that drives `stockade mcp` over stdio (tests/mcp.rs).
venv=${STOCKADE_VENV:-/opt/stockade-venv}
pip_packages=(
  kubernetes-validate
  docker
  schemathesis
  httpx
  pytest
  pytest-asyncio
  mypy
  hatchling
  mcp
)
[[ -x $venv/bin/pip ]] || { log "creating the Python venv $venv"; python3 -m venv "$venv"; }
pip_missing=()
for p in "${pip_packages[@]}"; do
  "$venv/bin/pip" show -q "$p" >/dev/null 2>&1 || pip_missing+=("$p")
done
if ((${#pip_missing[@]})); then
  log "installing ${pip_missing[*]} into $venv"
  "$venv/bin/pip" install -q "${pip_missing[@]}"
fi

# The Debian package starts a system containerd through systemd where systemd runs; where
# it does not (containers, CI machines), stockade starts its own private containerd on
# demand, so nothing more is needed here.

if ! command -v cargo >/dev/null; then
  for c in "$HOME/.cargo/bin/cargo" /root/.cargo/bin/cargo /usr/local/cargo/bin/cargo; do
    [[ -x $c ]] && export PATH="$(dirname "$c"):$PATH" && break
  done
fi
if ! command -v cargo >/dev/null; then
  echo "setup.sh: no Rust toolchain found: install one with rustup (https://rustup.rs), then rerun" >&2
  exit 1
fi

log "building stockade (release)"
cargo build --release --locked --bins
install -m 0755 target/release/stockade /usr/local/bin/stockade

if ((want_image)); then
  log "building the busybox base image"
  /usr/local/bin/stockade image build busybox
fi
log "ready: try  stockade run -- echo hello"
