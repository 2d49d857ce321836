//! The host effects of sandbox networking, behind one narrow trait: network namespace
//! files, veth pairs, the nftables table. [`IpRoute`] does them with iproute2, util-linux's
//! `nsenter` and `nft`; [`FakeHost`] records them, for tests without root.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use super::NetworkError;

/// One veth pair: `host` in the host's namespace with `host_addr`, its peer `eth0` in the
/// namespace at `netns` with `sandbox_addr`, a /31 between them and the default route
/// through the host side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Veth {
    /// The host side's link name (`stkv<slot>`).
    pub host: String,
    /// The sandbox's network namespace file.
    pub netns: PathBuf,
    /// The host side's address: the sandbox's gateway.
    pub host_addr: Ipv4Addr,
    /// The address of `eth0` in the sandbox.
    pub sandbox_addr: Ipv4Addr,
}

/// What sandbox networking does to the host.
pub trait NetHost: Send + Sync {
    /// Creates a network namespace held by a bind mount on `path` (a new file), with IPv6
    /// disabled and nothing else in it.
    fn create_netns(&self, path: &Path) -> Result<(), NetworkError>;
    /// Unmounts and removes the namespace file at `path`; a missing one is fine.
    fn remove_netns(&self, path: &Path) -> Result<(), NetworkError>;
    /// Creates and configures both sides of `veth` (see [`Veth`]).
    fn add_veth(&self, veth: &Veth) -> Result<(), NetworkError>;
    /// Deletes link `name` (its peer goes with it); a missing one is fine.
    fn delete_link(&self, name: &str) -> Result<(), NetworkError>;
    /// Names of the host's links that start with `prefix`.
    fn links(&self, prefix: &str) -> Vec<String>;
    /// Applies an `nft -f` script in one transaction.
    fn apply_nft(&self, script: &str) -> Result<(), NetworkError>;
}

/// The real host: iproute2 (`ip`), `nsenter` and `nft` from `PATH`, procfs and sysfs at
/// the given roots.
#[derive(Debug, Clone)]
pub struct IpRoute {
    /// procfs, for the per-interface sysctls. Default `/proc`.
    pub proc_root: PathBuf,
    /// sysfs, to list links. Default `/sys`.
    pub sys_root: PathBuf,
}

impl Default for IpRoute {
    fn default() -> Self {
        IpRoute {
            proc_root: PathBuf::from("/proc"),
            sys_root: PathBuf::from("/sys"),
        }
    }
}

fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<(), NetworkError> {
    let what = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NetworkError::Command {
            what: what.clone(),
            message: e.to_string(),
        })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| NetworkError::Command {
                what: what.clone(),
                message: e.to_string(),
            })?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| NetworkError::Command {
            what: what.clone(),
            message: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(NetworkError::Command {
            what,
            message: err.split_whitespace().collect::<Vec<_>>().join(" "),
        })
    }
}

impl IpRoute {
    fn write_sysctl(&self, rel: &str, value: &str) -> Result<(), NetworkError> {
        let path = self.proc_root.join("sys").join(rel);
        std::fs::write(&path, value).map_err(|source| NetworkError::Io { path, source })
    }
}

impl NetHost for IpRoute {
    fn create_netns(&self, path: &Path) -> Result<(), NetworkError> {
        let io = |source| NetworkError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent() {
            super::make_dir(parent)?;
        }
        std::fs::File::create_new(path).map_err(io)?;
        let target = path.to_path_buf();
        let proc_root = self.proc_root.clone();
        // A thread of its own enters the new namespace and dies with it; the bind mount
        // holds the namespace, and no other thread of this process ever changes namespace.
        let made = std::thread::spawn(move || -> Result<(), NetworkError> {
            use nix::mount::{mount, MsFlags};
            use nix::sched::{unshare, CloneFlags};
            let errno = |what: &str| {
                let what = what.to_string();
                move |e: nix::Error| NetworkError::Command {
                    what,
                    message: e.desc().to_string(),
                }
            };
            unshare(CloneFlags::CLONE_NEWNET).map_err(errno("unshare(CLONE_NEWNET)"))?;
            // No IPv6 in the sandbox's namespace: `all` for what exists, `default` for
            // the veth's peer that arrives later. A kernel without IPv6 has neither file.
            for conf in ["all", "default"] {
                let p = proc_root.join(format!("sys/net/ipv6/conf/{conf}/disable_ipv6"));
                match std::fs::write(&p, "1") {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(NetworkError::Io { path: p, source: e })
                    }
                    _ => {}
                }
            }
            let ns = proc_root.join("thread-self/ns/net");
            mount(
                Some(&ns),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(errno(&format!(
                "bind mount of the namespace on {}",
                target.display()
            )))
        })
        .join()
        .unwrap_or_else(|_| {
            Err(NetworkError::Command {
                what: "creating a network namespace".into(),
                message: "the thread panicked".into(),
            })
        });
        if made.is_err() {
            let _ = std::fs::remove_file(path);
        }
        made
    }

    fn remove_netns(&self, path: &Path) -> Result<(), NetworkError> {
        use nix::mount::{umount2, MntFlags};
        match umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::Error::EINVAL | nix::Error::ENOENT) => {}
            Err(e) => {
                return Err(NetworkError::Command {
                    what: format!("umount {}", path.display()),
                    message: e.desc().to_string(),
                })
            }
        }
        std::fs::remove_file(path)
            .or_else(super::gone_ok)
            .map_err(|source| NetworkError::Io {
                path: path.to_path_buf(),
                source,
            })
    }

    fn add_veth(&self, v: &Veth) -> Result<(), NetworkError> {
        let netns = v.netns.to_string_lossy();
        // The peer is created inside the sandbox's namespace under its final name, so no
        // name is ever taken in the host's.
        run(
            "ip",
            &[
                "link", "add", &v.host, "type", "veth", "peer", "name", "eth0", "netns", &netns,
            ],
            None,
        )?;
        // Before the link is up: no IPv6 (not even link-local) on the host side, and
        // packets arriving from the sandbox may be forwarded (per interface: the host's
        // own setting for every other interface stays as it is).
        let v6 = format!("net/ipv6/conf/{}/disable_ipv6", v.host);
        if self.proc_root.join("sys").join(&v6).exists() {
            self.write_sysctl(&v6, "1")?;
        }
        self.write_sysctl(&format!("net/ipv4/conf/{}/forwarding", v.host), "1")?;
        run(
            "ip",
            &["-batch", "-"],
            Some(&format!(
                "addr add {}/31 dev {}\nlink set {} up\n",
                v.host_addr, v.host, v.host
            )),
        )?;
        run(
            "nsenter",
            &[&format!("--net={netns}"), "ip", "-batch", "-"],
            Some(&format!(
                "link set lo up\naddr add {}/31 dev eth0\nlink set eth0 up\n\
                 route add default via {} dev eth0\n",
                v.sandbox_addr, v.host_addr
            )),
        )
    }

    fn delete_link(&self, name: &str) -> Result<(), NetworkError> {
        if !self.sys_root.join("class/net").join(name).exists() {
            return Ok(());
        }
        match run("ip", &["link", "delete", name], None) {
            // Gone in between (its namespace went first).
            Err(_) if !self.sys_root.join("class/net").join(name).exists() => Ok(()),
            r => r,
        }
    }

    fn links(&self, prefix: &str) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.sys_root.join("class/net")) else {
            return Vec::new();
        };
        let mut out: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| n.starts_with(prefix))
            .collect();
        out.sort();
        out
    }

    fn apply_nft(&self, script: &str) -> Result<(), NetworkError> {
        run("nft", &["-f", "-"], Some(script))
    }
}

/// Records every call; links and namespace files are kept in memory. `fail_on` makes the
/// named operation fail, to test that a failed setup leaves nothing behind.
#[derive(Debug, Default)]
pub struct FakeHost {
    /// Every call in order, as `<operation> <argument>` (`add_veth stkv0 …`).
    pub calls: Mutex<Vec<String>>,
    /// The host-side links that exist.
    pub links: Mutex<Vec<String>>,
    /// The namespace files that exist.
    pub netns: Mutex<Vec<PathBuf>>,
    /// Every nft script applied, in order.
    pub tables: Mutex<Vec<String>>,
    /// The operation (a [`NetHost`] method's name) that fails; `None`: nothing fails.
    pub fail_on: Option<&'static str>,
}

impl FakeHost {
    fn call(&self, op: &'static str, what: String) -> Result<(), NetworkError> {
        self.calls
            .lock()
            .expect("lock")
            .push(format!("{op} {what}"));
        if self.fail_on == Some(op) {
            return Err(NetworkError::Command {
                what: op.into(),
                message: "refused by the fake".into(),
            });
        }
        Ok(())
    }

    /// The table as last applied.
    pub fn table(&self) -> Option<String> {
        self.tables.lock().expect("lock").last().cloned()
    }
}

impl NetHost for FakeHost {
    fn create_netns(&self, path: &Path) -> Result<(), NetworkError> {
        self.call("create_netns", path.display().to_string())?;
        self.netns.lock().expect("lock").push(path.to_path_buf());
        Ok(())
    }
    fn remove_netns(&self, path: &Path) -> Result<(), NetworkError> {
        self.call("remove_netns", path.display().to_string())?;
        self.netns.lock().expect("lock").retain(|p| p != path);
        Ok(())
    }
    fn add_veth(&self, v: &Veth) -> Result<(), NetworkError> {
        self.call(
            "add_veth",
            format!("{} {} {}", v.host, v.host_addr, v.sandbox_addr),
        )?;
        self.links.lock().expect("lock").push(v.host.clone());
        Ok(())
    }
    fn delete_link(&self, name: &str) -> Result<(), NetworkError> {
        self.call("delete_link", name.to_string())?;
        self.links.lock().expect("lock").retain(|l| l != name);
        Ok(())
    }
    fn links(&self, prefix: &str) -> Vec<String> {
        let mut l: Vec<String> = self.links.lock().expect("lock").clone();
        l.retain(|n| n.starts_with(prefix));
        l
    }
    fn apply_nft(&self, script: &str) -> Result<(), NetworkError> {
        self.call("apply_nft", String::new())?;
        self.tables.lock().expect("lock").push(script.to_string());
        Ok(())
    }
}
