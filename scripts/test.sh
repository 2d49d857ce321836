#!/usr/bin/env bash
# Everything CI proves: formatting, lints, the unit tests, the integration and security tests
# against a real containerd (each test starts and stops its own private containerd), the
# benchmarks compiled, and the VM lane where QEMU is available.
#
#   sudo scripts/test.sh
#
# Environment: CI=true makes every test that would skip for lack of root, containerd or a
# tool fail instead. STOCKADE_SKIP_VM=1 leaves out the VM lane.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

scripts/setup.sh --no-image

# A one-shot build gains nothing from incremental caches; they would double the disk a fresh
# clone's build needs.
if [[ ${CI:-} == true ]]; then
  export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
fi

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
log "cargo check without default features (the library without the benchmark)"
cargo check --locked --no-default-features --all-targets
log "cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps
log "cargo test (unit, integration, security)"
# Tests that start containers share the host's cgroups and containerd binaries; two at a
# time keeps a 2-core machine responsive.
cargo test --locked -- --test-threads="${STOCKADE_TEST_THREADS:-2}"
log "cargo bench --no-run"
cargo bench --locked --no-run

if [[ ${STOCKADE_SKIP_VM:-0} != 1 && -x scripts/vm-test.sh ]]; then
  log "VM lane (cgroup v2 + AppArmor)"
  scripts/vm-test.sh
fi
log "all tests passed"
