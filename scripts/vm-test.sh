#!/usr/bin/env bash
# The VM lane: proves what this host cannot, on a guest with pure cgroup v2 and AppArmor.
# Boots the Debian cloud kernel under QEMU (KVM when /dev/kvm works, else TCG emulation),
# with containerd and runc inside and the freshly built stockade copied in, runs the checks
# in scripts/vm/checks.sh (AppArmor confinement, cgroup v2 limits from stockade's spec, OOM
# and timeout reporting) and the crate's integration test binaries, and summarises the
# guest's `RESULT name=pass|fail detail` lines. Exits nonzero when a check fails, a check is
# missing, or the VM does not finish in time.
#
#   sudo scripts/vm-test.sh
#
# Environment:
#   STOCKADE_BIN            stockade binary to test [default: cargo build --release]
#   STOCKADE_VM_CACHE       cache of guest kernel and image [default: /var/cache/stockade-vm]
#   STOCKADE_VM_TIMEOUT     seconds the VM may run before it is stopped [default: 1500]
#   STOCKADE_VM_ACCEL       auto, kvm or tcg [default: auto: kvm if a probe boot works]
#   STOCKADE_VM_TESTS       integration test binaries (tests/*.rs) to run in the guest:
#                           all, none, or names separated by spaces [default: the ones
#                           that depend on the host's kernel, listed below]
#   STOCKADE_VM_TEST_TIMEOUT  seconds each test binary may run in the guest [default: 600]
#   STOCKADE_VM_MEMORY      guest memory in MiB [default: 2048]
#   STOCKADE_VM_CPUS        guest CPUs [default: 2]
#   STOCKADE_VM_KEEP_LOG    copy the serial log to this path
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

cache=${STOCKADE_VM_CACHE:-/var/cache/stockade-vm}
vm_timeout=${STOCKADE_VM_TIMEOUT:-1500}
test_timeout=${STOCKADE_VM_TEST_TIMEOUT:-600}
accel=${STOCKADE_VM_ACCEL:-auto}
# The integration tests whose outcome depends on the kernel (cgroup v2, AppArmor, seccomp,
# overlayfs) rather than on the code alone.
# Left out by default: seccomp_behaviour runs the host's python3 and node under the filters
# (the guest has no node), and the security suite takes more than 10 minutes under TCG
# (STOCKADE_VM_TESTS="security" STOCKADE_VM_TEST_TIMEOUT=1800 runs it).
vm_tests=${STOCKADE_VM_TESTS:-apparmor daemon doctor images pool run runtime_binary}
vm_mem=${STOCKADE_VM_MEMORY:-2048}
vm_cpus=${STOCKADE_VM_CPUS:-2}

# Every check the guest must report; a missing one fails the lane like a failed one.
expected=(boot cgroup2 apparmor-kernel overlay containerd stockade
          doctor image-build default-run apparmor-profile apparmor-denied
          cgroup-limits pids-limit oom oom-floor cpu-quota timeout)

log() { printf '\033[1m==> [vm %3ss] %s\033[0m\n' "$SECONDS" "$*" >&2; }
die() { echo "vm-test.sh: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (it installs packages and builds a root filesystem)"

# --- temporary files and the QEMU process: removed and stopped on every path -----------
tmp=$(mktemp -d "${TMPDIR:-/var/tmp}/stockade-vm.XXXXXX")
qpid=""
stop_qemu() {
  if [[ -n $qpid ]] && kill -0 "$qpid" 2>/dev/null; then
    kill -TERM "$qpid" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$qpid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$qpid" 2>/dev/null || true
  fi
  [[ -n $qpid ]] && wait "$qpid" 2>/dev/null || true
  qpid=""
}
cleanup() {
  stop_qemu
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Starts QEMU in the background (its PID in $qpid), serial console to the file $1; the
# rest of the arguments go to QEMU. QEMU's own temporary files (snapshot=on) go to $tmp.
start_qemu() {
  local serial=$1
  shift
  TMPDIR=$tmp qemu-system-x86_64 -display none -monitor none -no-reboot \
    -serial "file:$serial" "$@" </dev/null >"$tmp/qemu.out" 2>&1 &
  qpid=$!
}

# Waits for QEMU to exit, at most $1 seconds; returns 1 (and stops it) on timeout. Streams
# the serial file $2 to stderr when $3 is 1.
wait_qemu() {
  local limit=$1 serial=$2 stream=${3:-0} deadline=$((SECONDS + $1)) off=0 size
  while kill -0 "$qpid" 2>/dev/null; do
    if ((stream)) && [[ -f $serial ]]; then
      size=$(stat -c %s "$serial")
      if ((size > off)); then
        tail -c "+$((off + 1))" "$serial" | head -c "$((size - off))" | tr -d '\r' | sed 's/^/vm| /' >&2
        off=$size
      fi
    fi
    if ((SECONDS >= deadline)); then
      stop_qemu
      return 1
    fi
    sleep 1
  done
  if ((stream)) && [[ -f $serial ]]; then
    tail -c "+$((off + 1))" "$serial" | tr -d '\r' | sed 's/^/vm| /' >&2
  fi
  wait "$qpid" 2>/dev/null || true
  qpid=""
}

# --- host tools --------------------------------------------------------------------------
host_packages=(qemu-system-x86 mmdebstrap e2fsprogs jq tar binutils)
missing=()
for p in "${host_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
kernel_meta=linux-image-cloud-amd64
if ((${#missing[@]})) || ! apt-cache show "$kernel_meta" >/dev/null 2>&1; then
  log "installing ${missing[*]:-nothing} (and refreshing package lists)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  ((${#missing[@]} == 0)) || apt-get install -y -qq --no-install-recommends \
    -o DPkg::Lock::Timeout=300 "${missing[@]}" >/dev/null
fi

# --- guest kernel and root image, cached by what they are built from --------------------
kpkg=$(apt-cache depends "$kernel_meta" | awk '/Depends: linux-image-/{print $2; exit}')
[[ -n $kpkg ]] || die "cannot resolve $kernel_meta to a kernel package"
kversion=$(apt-cache show --no-all-versions "$kpkg" | awk '/^Version:/{print $2; exit}')
key=$({ cat scripts/vm/guest-image.sh; echo "$kpkg $kversion"; } | sha256sum | cut -c1-16)
guest=$cache/guest-$key
mkdir -p "$cache"
exec 9>"$cache/lock"
flock 9
if [[ -f $guest/root.img && -f $guest/vmlinuz ]]; then
  log "guest image cached: $guest ($kpkg $kversion)"
else
  log "building the guest image ($kpkg $kversion, Debian bookworm) into $guest"
  rm -rf "$cache/.build-$key"
  TMPDIR=$tmp scripts/vm/guest-image.sh "$cache/.build-$key" "$kpkg"
  # One guest in the cache: older keys are images nothing will boot again.
  find "$cache" -maxdepth 1 -name 'guest-*' -type d -exec rm -rf {} +
  mv "$cache/.build-$key" "$guest"
  log "guest image built: $(du -sh "$guest/root.img" | cut -f1) used of $(du -sh --apparent-size "$guest/root.img" | cut -f1)"
fi
flock -u 9

# --- acceleration: KVM only when a probe boot reaches the kernel's end within seconds ---
# Nested KVM rejects writes to IA32_ARCH_CAPABILITIES, which -cpu host would make.
kvm_cpu=host,-arch-capabilities
kvm_probe() {
  [[ -r /dev/kvm && -w /dev/kvm ]] || return 1
  local mark
  mark=$cache/kvm-probe-$(cat /proc/sys/kernel/random/boot_id)
  if [[ -f $mark ]]; then
    [[ $(cat "$mark") == yes ]]
    return
  fi
  # Without a root disk the kernel panics at once; panic=-1 and -no-reboot end QEMU. Where
  # nested KVM hangs, nothing reaches the console and the probe is stopped.
  start_qemu "$tmp/kvm-probe.log" -accel kvm -cpu "$kvm_cpu" -m 256 -kernel "$guest/vmlinuz" \
    -append "console=ttyS0 panic=-1"
  local ok=no
  if wait_qemu 15 "$tmp/kvm-probe.log" && grep -aq 'Kernel panic' "$tmp/kvm-probe.log"; then
    ok=yes
  fi
  rm -f "$cache"/kvm-probe-*
  echo "$ok" >"$mark"
  [[ $ok == yes ]]
}
case $accel in
  auto) if kvm_probe; then accel=kvm; else accel=tcg; fi ;;
  kvm | tcg) ;;
  *) die "STOCKADE_VM_ACCEL=$accel: expected auto, kvm or tcg" ;;
esac
if [[ $accel == kvm ]]; then cpu=$kvm_cpu; else cpu=max; fi
log "accelerator: $accel"

# --- what the guest runs: stockade, the guest scripts, the integration test binaries ----
if ! command -v cargo >/dev/null; then
  for c in "$HOME/.cargo/bin/cargo" /root/.cargo/bin/cargo /usr/local/cargo/bin/cargo; do
    [[ -x $c ]] && PATH="$(dirname "$c"):$PATH" && break
  done
fi
target_dir=${CARGO_TARGET_DIR:-$repo/target}
if [[ -n ${STOCKADE_BIN:-} ]]; then
  bin=$STOCKADE_BIN
else
  log "cargo build --release"
  cargo build --release --locked --bins
  bin=$target_dir/release/stockade
fi
[[ -x $bin ]] || die "no stockade binary at $bin"

# The payload is a tree unpacked over the guest's /: $stage mirrors absolute paths.
stage=$tmp/stage
mkdir -p "$stage/vm" "$stage/usr/local/bin"
cp scripts/vm/init.sh scripts/vm/checks.sh "$stage/vm/"
cp "$bin" "$stage/usr/local/bin/stockade"

# Arguments for test binaries in the guest. The guest has no network, so nothing that
# builds the python or node image (mmdebstrap downloads Debian packages) runs there.
declare -A test_args=(
  [security]="--skip escape::python"
  [images]="--skip python --skip node"
)

# Integration tests find stockade and their fixtures through absolute paths compiled in
# (CARGO_BIN_EXE_*, CARGO_MANIFEST_DIR), so the guest gets them at the same paths.
test_exes=()
extra_paths=()
found=()
if [[ $vm_tests != none ]]; then
  log "cargo test --no-run (integration test binaries for the guest)"
  cargo test --locked --no-run --tests --message-format=json-render-diagnostics >"$tmp/artifacts.json"
  while IFS=$'\t' read -r kind name exe; do
    if [[ $kind == bin ]]; then
      extra_paths+=("$exe")
    elif [[ $vm_tests == all || " $vm_tests " == *" $name "* ]]; then
      found+=("$name")
      args=${test_args[$name]:-}
      test_exes+=("$name=$exe${args:+=${args// /,}}")
      extra_paths+=("$exe")
    fi
  done < <(jq -r 'select(.reason == "compiler-artifact" and .executable != null)
                  | select(.target.kind[0] == "test"
                           or (.target.kind[0] == "bin" and .profile.test == false))
                  | [.target.kind[0], .target.name, .executable] | @tsv' "$tmp/artifacts.json")
  if [[ $vm_tests != all ]]; then
    for name in $vm_tests; do
      [[ " ${found[*]} " == *" $name "* ]] || die "STOCKADE_VM_TESTS: no integration test named $name"
    done
  fi
fi
{
  printf 'VM_TESTS=%q\n' "${test_exes[*]}"
  printf 'VM_CI=%q\n' "${CI:-}"
  printf 'VM_TEST_TIMEOUT=%q\n' "$test_timeout"
  printf 'VM_REPO=%q\n' "$repo"
} >"$stage/vm/env"

if ((${#test_exes[@]})); then
  # The source tree (fixtures, profiles), then the binaries without their debug info (a
  # quarter of the size; backtraces keep function names).
  mkdir -p "$stage$repo"
  tar -cf - -C "$repo" --exclude=./.git --exclude=./target . | tar -xf - -C "$stage$repo"
  for exe in "${extra_paths[@]}"; do
    mkdir -p "$stage$(dirname "$exe")"
    objcopy --strip-debug "$exe" "$stage$exe"
  done
fi
tar -cf "$tmp/payload.tar" -C "$stage" .
log "payload: $(du -h "$tmp/payload.tar" | cut -f1) (stockade, guest scripts, ${#test_exes[@]} test binaries)"

# --- boot ---------------------------------------------------------------------------------
log "booting the guest (timeout ${vm_timeout}s)"
boot_start=$SECONDS
serial=$tmp/serial.log
start_qemu "$serial" -accel "$accel" -cpu "$cpu" -smp "$vm_cpus" -m "$vm_mem" \
  -kernel "$guest/vmlinuz" \
  -device nvme,id=nvme0,serial=stockade \
  -drive "file=$guest/root.img,if=none,id=root,format=raw,snapshot=on" \
  -device nvme-ns,drive=root,bus=nvme0,nsid=1 \
  -drive "file=$tmp/payload.tar,if=none,id=payload,format=raw,snapshot=on" \
  -device nvme-ns,drive=payload,bus=nvme0,nsid=2 \
  -append "console=ttyS0 root=/dev/nvme0n1 rw init=/sbin/stockade-vm-init quiet panic=-1
           apparmor=1 security=apparmor cgroup_no_v1=all systemd.unified_cgroup_hierarchy=1"
finished=1
wait_qemu "$vm_timeout" "$serial" 1 || finished=0
log "guest ran $((SECONDS - boot_start))s"
[[ -z ${STOCKADE_VM_KEEP_LOG:-} ]] || cp "$serial" "$STOCKADE_VM_KEEP_LOG"

# --- results --------------------------------------------------------------------------------
tr -d '\r' <"$serial" | grep -a '^RESULT ' | sed 's/^RESULT //' >"$tmp/results" || true
fail=0
pass=0
echo
echo "VM lane results ($accel):"
while read -r nv detail; do
  name=${nv%%=*}
  verdict=${nv#*=}
  printf '  %-6s %-22s %s\n' "$verdict" "$name" "${detail:0:160}"
  if [[ $verdict == pass ]]; then pass=$((pass + 1)); else fail=$((fail + 1)); fi
done <"$tmp/results"
for name in "${expected[@]}"; do
  if ! grep -q "^$name=" "$tmp/results"; then
    printf '  %-6s %-22s %s\n' missing "$name" "the guest never reported it"
    fail=$((fail + 1))
  fi
done
if ((!finished)); then
  echo "  the VM did not finish within ${vm_timeout}s and was stopped"
  fail=$((fail + 1))
elif ! tr -d '\r' <"$serial" | grep -aq '^VM-DONE'; then
  echo "  the guest stopped before the end of its checks; last console lines:"
  tr -d '\r' <"$serial" | tail -n 30 | sed 's/^/    /'
  fail=$((fail + 1))
fi
echo "VM lane: $pass passed, $fail failed ($((SECONDS))s in all)"
((fail == 0))
