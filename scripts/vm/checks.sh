#!/bin/bash
# The VM lane's checks, run by /vm/init.sh in a guest with pure cgroup v2, AppArmor and
# containerd on its default socket. Every check goes through the stockade CLI as a user
# would, and prints one `RESULT name=pass|fail detail` line; scripts/vm-test.sh expects
# every name below.
set -u

R() { # name pass|fail detail...
  local name=$1 verdict=$2
  shift 2
  echo "RESULT $name=$verdict $*"
}
# Runs stockade with a guard timeout; sets out (stdout), err (first stderr lines), rc.
sk() {
  out=$(timeout 240 stockade "$@" 2>/run/sk.err)
  rc=$?
  err=$(head -c 300 /run/sk.err | tr '\n' ' ')
}
one_line() { tr '\n' ' ' | head -c "${1:-200}"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b - a}'; }
# Processes of sandbox users: 65534 (a policy naming it) or a sandbox's own UID (the
# default range, 1900000000-1900065535), optionally only those running command $1.
sandbox_pids() {
  ps -eo pid=,uid=,comm= | awk -v c="${1:-}" \
    '($2 == 65534 || ($2 >= 1900000000 && $2 < 1900065536)) && (c == "" || $3 == c) {print $1}'
}
# Processes left running as a sandbox user after a run ended.
leftovers() { sandbox_pids | wc -l; }

# --- doctor: the host facts stockade sees ---------------------------------------------
sk doctor --json
if ((rc == 0)) && jq -e '.facts.cgroup == "v2" and .facts.apparmor == true' >/dev/null 2>&1 <<<"$out"; then
  R doctor pass "$(jq -c '{cgroup: .facts.cgroup, apparmor: .facts.apparmor, usable, controllers: .facts.cgroup_controllers, not_enforced}' <<<"$out")"
else
  R doctor fail "rc=$rc $(jq -c '{cgroup: .facts.cgroup, apparmor: .facts.apparmor}' <<<"$out" 2>/dev/null || echo "$out" | one_line) $err"
fi

# --- the busybox base image -------------------------------------------------------------
t=$(now)
sk image build busybox
if ((rc == 0)); then
  R image-build pass "$(since "$t")s $(echo "$out" | tail -n 1 | one_line 120)"
else
  R image-build fail "rc=$rc $err"
fi

# --- (5) the default run works -----------------------------------------------------------
t=$(now)
sk run -- echo hello from the sandbox
if ((rc == 0)) && [[ $out == "hello from the sandbox" ]]; then
  R default-run pass "exit 0 in $(since "$t")s"
else
  R default-run fail "rc=$rc out=$(echo "$out" | one_line 100) $err"
fi

# --- (2) AppArmor: the sandbox runs confined by stockade-default, in enforce mode ---------
# Inside, the profile itself refuses reads of /proc/*/attr (how the host confines it is not
# the sandbox's business), so the label is read from the guest side, from the sandbox's
# process, while the sandbox also tries to read its own.
timeout 120 stockade run --timeout 60s -- sh -c 'cat /proc/self/attr/current; exec sleep 60' \
  >/run/aa.out 2>/run/aa.err &
apid=$!
spid=""
for _ in $(seq 150); do
  spid=$(sandbox_pids sleep | head -n 1)
  [[ -n $spid ]] && break
  kill -0 "$apid" 2>/dev/null || break
  sleep 0.2
done
label=$( [[ -n $spid ]] && cat "/proc/$spid/attr/current" 2>&1)
[[ -n $spid ]] && kill -TERM "$spid"
wait "$apid"
inside=$(grep -v '^stockade: ' /run/aa.err /run/aa.out | one_line 100)
loaded=$(grep '^stockade-default ' /sys/kernel/security/apparmor/profiles)
if [[ $label == "stockade-default (enforce)" && $inside == *"Permission denied"* ]]; then
  R apparmor-profile pass "sandbox process $spid is '$label' (kernel: $loaded); inside, reading its own label: $inside"
else
  R apparmor-profile fail "sandbox process ${spid:-not found}: '${label:-}' (kernel: ${loaded:-no stockade-default}); inside: $inside"
fi

# ...and what it denies fails and is logged by the kernel. Each attempt gets past the
# sandbox's other layers (its own files; seccomp left off for the mount), so only the
# profile stands in the way.
before=$(dmesg | grep -c 'apparmor="DENIED"')
denied_ok=1
detail=""
attempt() { # label, then the run's arguments
  local label=$1
  shift
  sk run "$@"
  if ((rc == 0)); then
    denied_ok=0
    detail+="$label: SUCCEEDED ($(echo "$out" | one_line 60)); "
  else
    detail+="$label: failed rc=$rc ($(grep -v '^stockade: ' /run/sk.err | one_line 60)); "
  fi
}
attempt mem-write -- sh -c 'echo x > /proc/self/mem'
attempt attr-write -- sh -c 'echo "changeprofile unconfined" > /proc/self/attr/current'
attempt mount --seccomp unconfined -- mount -t tmpfs tmpfs /tmp
new=$(dmesg | grep 'apparmor="DENIED"' | tail -n "+$((before + 1))" | grep 'profile="stockade-default"')
logged=$(echo -n "$new" | grep -c 'apparmor=')
if ((denied_ok)) && ((logged > 0)); then
  R apparmor-denied pass "${detail}kernel log: $logged denial(s): $(echo "$new" | sed -E 's/.*operation="([^"]*)".*name="([^"]*)".*/\1 \2;/' | sort -u | one_line 200)"
else
  R apparmor-denied fail "${detail}kernel log: $logged stockade-default denial(s)"
fi

# --- (3) the limits from stockade's spec, read from inside the sandbox's cgroup namespace -
sk run --memory 64M --pids 32 --cpus 0.5 -- \
  cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max /sys/fs/cgroup/cpu.max /sys/fs/cgroup/memory.swap.max
got=$(echo "$out" | one_line 120)
if ((rc == 0)) && [[ $got == "67108864 32 50000 100000 0 " ]]; then
  R cgroup-limits pass "memory.max pids.max cpu.max memory.swap.max = $got"
else
  R cgroup-limits fail "rc=$rc got [$got] want [67108864 32 50000 100000 0] $err"
fi

# --- (4a) a fork bomb stops at pids.max and the host stays responsive ---------------------
# The sandbox shell uses builtins only once the bomb runs (a fork would fail): it waits
# until the kernel reports pids.max reached, then samples pids.current until the timeout
# ends the run.
bomb='mkfifo /tmp/idle
b() { while :; do b & done; }
(b) 2>/dev/null &
m=0
while [ "$m" = 0 ]; do while read k v; do [ "$k" = max ] && m=$v; done </sys/fs/cgroup/pids.events; done
echo "max_events=$m"
exec 3<>/tmp/idle
while :; do read c </sys/fs/cgroup/pids.current; echo "current=$c"; read -t 1 x <&3; done'
t=$(now)
timeout 240 stockade run --pids 32 --timeout 20s -- sh -c "$bomb" >/run/bomb.out 2>/run/bomb.err &
bpid=$!
# While the bomb runs, the guest must still answer: time a few things it does.
for _ in $(seq 100); do
  grep -q '^current=' /run/bomb.out 2>/dev/null && break
  kill -0 "$bpid" 2>/dev/null || break
  sleep 0.2
done
r0=$(now)
ps -e >/dev/null
ls /proc >/dev/null
stockade --version >/dev/null
lat=$(since "$r0")
wait "$bpid"
rc=$?
peak=$(sed -n 's/^current=//p' /run/bomb.out | sort -n | tail -n 1)
events=$(sed -n 's/^max_events=//p' /run/bomb.out)
samples=$(grep -c '^current=' /run/bomb.out)
left=$(leftovers)
detail="exit=$rc after $(since "$t")s, pids.events max=${events:-none}, peak pids.current=${peak:-none} over $samples samples, guest answered in ${lat}s, leftover processes=$left"
if ((rc == 124)) && [[ -n $peak && $peak -le 32 && ${events:-0} -gt 0 ]] &&
  awk -v l="$lat" 'BEGIN{exit !(l < 10)}' && ((left == 0)); then
  R pids-limit pass "$detail"
else
  R pids-limit fail "$detail $(head -c 200 /run/bomb.err | one_line)"
fi

# --- (4b) a memory hog is OOM-killed: exit 137 and oom_killed in --json ------------------
t=$(now)
sk run --memory 64M --json -- awk 'BEGIN { s = "0123456789abcdef"; while (1) s = s s }'
summary=$(jq -c '{exit_code, oom_killed, timed_out}' <<<"$out" 2>/dev/null)
if ((rc == 137)) && jq -e '.oom_killed == true and .exit_code == 137' >/dev/null 2>&1 <<<"$out"; then
  R oom pass "exit 137 in $(since "$t")s, $summary, guest log: $(dmesg | grep -m1 'Memory cgroup out of memory' | cut -c1-120)"
else
  R oom fail "rc=$rc ${summary:-$(echo "$out" | one_line 120)} $err"
fi

# --- oom_score_adj: set from the host with CAP_SYS_RESOURCE, so it is a floor ------------
# The guest's root holds CAP_SYS_RESOURCE (some container hosts' root does not; there the
# run reports the floor under not_enforced instead).
sk run --json -- sh -c 'cat /proc/self/oom_score_adj; echo 0 > /proc/self/oom_score_adj; cat /proc/self/oom_score_adj'
vals=$(jq -r '.stdout' <<<"$out" 2>/dev/null | xargs)
floor_reported=$(jq -r '[.not_enforced[]? | select(.protection == "oom_score_adj")] | length' <<<"$out" 2>/dev/null)
if ((rc == 0)) && [[ $vals == "500 500" && $floor_reported == 0 ]]; then
  R oom-floor pass "the sandbox read $vals and could not lower it"
else
  R oom-floor fail "rc=$rc values=${vals:-none} not_enforced entries=${floor_reported:-?} $err"
fi

# --- cpu.max holds: a busy loop at --cpus 0.5 is throttled -------------------------------
sk run --cpus 0.5 --timeout 60s -- sh -c 'timeout 3 sh -c "while :; do :; done"; cat /sys/fs/cgroup/cpu.stat'
thr=$(awk '$1 == "nr_throttled" {print $2}' <<<"$out")
usage=$(awk '$1 == "usage_usec" {print $2}' <<<"$out")
if [[ -n $thr && $thr -gt 0 ]]; then
  R cpu-quota pass "3s busy loop at 0.5 CPU: nr_throttled=$thr usage_usec=$usage"
else
  R cpu-quota fail "rc=$rc nr_throttled=${thr:-none} usage_usec=${usage:-none} $err"
fi

# --- (5) the timeout: exit 124 and timed_out in --json -----------------------------------
t=$(now)
sk run --timeout 1s -- sleep 10
trc=$rc
took=$(since "$t")
sk run --timeout 1s --json -- sleep 10
jrc=$rc
summary=$(jq -c '{exit_code, oom_killed, timed_out}' <<<"$out" 2>/dev/null)
# timed_out and 124 are the claim (sleep 10 would exit 0); the wall time includes a cold
# start, which an emulated guest on a busy host makes slow, so it is reported, not judged.
if ((trc == 124 && jrc == 124)) && jq -e '.timed_out == true and .exit_code == 124' >/dev/null 2>&1 <<<"$out"; then
  R timeout pass "sleep 10 with --timeout 1s: exit 124 after ${took}s, $summary"
else
  R timeout fail "rc=$trc, with --json rc=$jrc, after ${took}s ${summary:-$(echo "$out" | one_line 120)} $err"
fi
