//! The probe both sandboxes run, and what it shows parsed into a [`View`]; the seccomp
//! filter containerd stored for a container.

use std::collections::BTreeMap;

use super::{CriNode, CRI_NAMESPACE};

/// Prints what the claims compare, in sections the parser below reads. The cgroup files are
/// the container's own, as its cgroup mount shows them (v1: one directory per controller).
/// The attacks print how each attempt failed: writing the root, opening an IPv4 socket
/// (the network-`none` seccomp profile allows only `AF_UNIX`), making a user namespace,
/// mounting.
pub const PROBE: &str = r#"
echo '== id'; id -u; id -g; id -G
echo '== status'; cat /proc/self/status
echo '== mountinfo'; cat /proc/self/mountinfo
echo '== cgroup'
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  echo "memory=$(cat /sys/fs/cgroup/memory.max)"
  echo "pids=$(cat /sys/fs/cgroup/pids.max)"
  echo "cpu=$(cat /sys/fs/cgroup/cpu.max)"
  echo "cpu_weight=$(cat /sys/fs/cgroup/cpu.weight)"
else
  echo "memory=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes)"
  echo "pids=$(cat /sys/fs/cgroup/pids/pids.max)"
  echo "cpu=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)"
  echo "cpu_weight=shares $(cat /sys/fs/cgroup/cpu/cpu.shares)"
fi
echo '== lsm'; cat /proc/self/attr/current 2>/dev/null || echo none
echo '== attacks'
echo "write_root=$(touch /.probe 2>&1 && echo written)"
echo "inet_socket=$(nc -w 1 127.0.0.1 9 </dev/null 2>&1 && echo connected)"
echo "userns=$(unshare -U true 2>&1 && echo created)"
echo "mount=$(mount -t tmpfs probe /tmp 2>&1 && echo mounted)"
"#;

/// A sandbox's view of itself, from [`PROBE`]'s output.
#[derive(Debug, Default)]
pub struct View {
    pub fields: BTreeMap<String, String>,
    /// Mount points mounted read-write, but for the kernel's own filesystems and masks.
    pub writable: Vec<String>,
    /// Paths of /proc and /sys masked (hidden behind /dev/null or an empty tmpfs).
    pub masked: Vec<String>,
}

pub fn view(out: &str) -> View {
    let mut v = View::default();
    let mut section = "";
    let mut ids = Vec::new();
    for line in out.lines() {
        if let Some(s) = line.strip_prefix("== ") {
            section = s;
            continue;
        }
        match section {
            "id" => ids.push(line.trim().to_string()),
            "status" => {
                if let Some((k, val)) = line.split_once(':') {
                    let k = k.trim();
                    if k.starts_with("Cap") || k.starts_with("Seccomp") || k == "NoNewPrivs" {
                        v.fields.insert(k.into(), val.trim().into());
                    }
                }
            }
            "mountinfo" => {
                // id parent major:minor root mountpoint options [optional...] - fstype source super
                let f: Vec<&str> = line.split(' ').collect();
                let Some(dash) = f.iter().position(|x| *x == "-") else {
                    continue;
                };
                let (root, point, opts) = (f[3], f[4], f[5]);
                let (fstype, sup) = (f[dash + 1], f[dash + 3]);
                let rw = opts.split(',').next() == Some("rw");
                // A masked path: /dev/null bound over a file, or an empty read-only tmpfs
                // over a directory, of /proc or /sys.
                let kernel_path = point.starts_with("/proc/") || point.starts_with("/sys/");
                if kernel_path
                    && ((root == "/null" && matches!(fstype, "devtmpfs" | "tmpfs"))
                        || (fstype == "tmpfs" && !rw))
                {
                    v.masked.push(point.to_string());
                    continue;
                }
                if point == "/" {
                    v.fields
                        .insert("root".into(), (if rw { "rw" } else { "ro" }).into());
                }
                if point == "/tmp" {
                    let size = sup.split(',').find(|o| o.starts_with("size="));
                    v.fields.insert(
                        "tmp".into(),
                        format!(
                            "{fstype} {} {}",
                            if rw { "rw" } else { "ro" },
                            size.unwrap_or("")
                        ),
                    );
                }
                // The kernel's own filesystems (and /dev's tmpfs of device nodes) are the
                // runtime's business, the same for both; files and directories are not.
                let pseudo = matches!(
                    fstype,
                    "proc" | "sysfs" | "cgroup" | "cgroup2" | "devpts" | "mqueue"
                ) || (fstype == "tmpfs" && point == "/dev");
                if rw && !pseudo {
                    v.writable.push(point.to_string());
                }
            }
            "cgroup" | "attacks" => {
                if let Some((k, val)) = line.split_once('=') {
                    v.fields.insert(k.into(), val.into());
                }
            }
            "lsm" => {
                v.fields.insert("lsm".into(), line.trim().into());
            }
            _ => {}
        }
    }
    for (k, val) in ["uid", "gid", "groups"].iter().zip(ids) {
        v.fields.insert((*k).into(), val);
    }
    v.writable.sort();
    v.writable.dedup();
    v.masked.sort();
    v.masked.dedup();
    v
}

/// The `linux.seccomp` of the OCI spec containerd stored for container `id`.
pub async fn loaded_seccomp(node: &CriNode, id: &str) -> serde_json::Value {
    use containerd_client::services::v1::GetContainerRequest;
    let client = node.daemon().client(CRI_NAMESPACE).await;
    let c = client
        .containers()
        .get(client.request(GetContainerRequest { id: id.into() }))
        .await
        .unwrap_or_else(|e| panic!("get container {id}: {e}"))
        .into_inner()
        .container
        .expect("a container record");
    let spec: serde_json::Value =
        serde_json::from_slice(&c.spec.expect("a spec").value).expect("the spec is JSON");
    spec["linux"]["seccomp"].clone()
}

/// `v` without null members, empty arrays or objects and a zero `valueTwo`: what the OCI
/// spec's Go encoder omits (`omitempty`) and stockade's writes.
pub fn pruned(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    let empty = |v: &Value| match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    };
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), pruned(v)))
                .filter(|(k, v)| !(empty(v) || (k == "valueTwo" && v.as_u64() == Some(0))))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(pruned).collect()),
        other => other.clone(),
    }
}
