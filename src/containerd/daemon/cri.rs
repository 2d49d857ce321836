//! The CRI plugin of a private containerd, for a daemon that must speak Kubernetes' Container
//! Runtime Interface (the proof that a rendered pod runs as confined through the CRI as it
//! does through `stockade run`). stockade itself never uses the CRI: the host-wide daemon
//! keeps the plugin disabled ([`super::DISABLED_PLUGINS`]), and only a [`DaemonPaths`] with
//! [`DaemonPaths::cri`] set enables it.
//!
//! Every directory the plugin writes is kept under the daemon's own root and state: its
//! image and sandbox metadata (`<root>/io.containerd.grpc.v1.cri`), the pods' network
//! namespaces (`netns_mounts_under_state_dir`, under `<state>/io.containerd.grpc.v1.cri`)
//! and runc's state (the runc runtime's `Root`, `<state>/runc`). The streaming server
//! (exec/attach/port-forward URLs, unused by `ExecSync`) listens on loopback only, on a port
//! the kernel picks.
//!
//! [`DaemonPaths`]: super::DaemonPaths
//! [`DaemonPaths::cri`]: super::DaemonPaths::cri

use std::path::{Path, PathBuf};

/// Where Debian's `containernetworking-plugins` installs the CNI plugins.
pub const DEFAULT_CNI_BIN_DIR: &str = "/usr/lib/cni";

/// The CRI plugin's name in containerd's config (version 2).
pub const PLUGIN: &str = "io.containerd.grpc.v1.cri";

/// What the CRI plugin needs beyond the daemon's paths. [`CriConfig::new`] gives the
/// documented defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CriConfig {
    /// The pod sandbox ("pause") image: the CRI plugin pulls it when it is missing, so for a
    /// daemon without a registry it must already be in the `k8s.io` namespace.
    pub sandbox_image: String,
    /// Where the CNI plugin binaries are ([`DEFAULT_CNI_BIN_DIR`] by default).
    pub cni_bin_dir: PathBuf,
    /// Where the CNI network configuration is (`<state>/cni/net.d` under the daemon's state
    /// by default, see [`CriConfig::new`]); the plugin loads the first file only.
    pub cni_conf_dir: PathBuf,
    /// Whether the plugin ignores AppArmor profiles even where the kernel has AppArmor
    /// (default false: the plugin applies AppArmor wherever the host supports it and
    /// refuses a named profile where it does not).
    pub disable_apparmor: bool,
    /// Whether a container's `oom_score_adj` is raised to the daemon's own when it asks
    /// for less (default false; true where the daemon runs without `CAP_SYS_RESOURCE`).
    pub restrict_oom_score_adj: bool,
}

impl CriConfig {
    /// `sandbox_image` with the defaults: CNI plugins from [`DEFAULT_CNI_BIN_DIR`], the CNI
    /// configuration in `<state>/cni/net.d`, AppArmor as the host has it, `oom_score_adj`
    /// unrestricted.
    pub fn new(sandbox_image: &str, state: &Path) -> CriConfig {
        CriConfig {
            sandbox_image: sandbox_image.to_string(),
            cni_bin_dir: PathBuf::from(DEFAULT_CNI_BIN_DIR),
            cni_conf_dir: state.join("cni").join("net.d"),
            disable_apparmor: false,
            restrict_oom_score_adj: false,
        }
    }

    /// The plugin's section of containerd's config (version 2) for a daemon whose state
    /// directory is `state`: cgroupfs (not systemd) cgroups, the overlayfs snapshotter, no
    /// SELinux, runc's state under `<state>/runc`.
    pub fn render(&self, state: &Path) -> String {
        let q = |p: &Path| toml::Value::String(p.display().to_string()).to_string();
        let s = |v: &str| toml::Value::String(v.to_string()).to_string();
        format!(
            "\n\
             [plugins.\"{PLUGIN}\"]\n\
             sandbox_image = {image}\n\
             enable_selinux = false\n\
             disable_apparmor = {apparmor}\n\
             restrict_oom_score_adj = {oom}\n\
             netns_mounts_under_state_dir = true\n\
             disable_tcp_service = true\n\
             enable_tls_streaming = false\n\
             stream_server_address = \"127.0.0.1\"\n\
             stream_server_port = \"0\"\n\
             \n\
             [plugins.\"{PLUGIN}\".cni]\n\
             bin_dir = {bin}\n\
             conf_dir = {conf}\n\
             max_conf_num = 1\n\
             \n\
             [plugins.\"{PLUGIN}\".containerd]\n\
             snapshotter = \"overlayfs\"\n\
             default_runtime_name = \"runc\"\n\
             \n\
             [plugins.\"{PLUGIN}\".containerd.runtimes.runc]\n\
             runtime_type = \"io.containerd.runc.v2\"\n\
             \n\
             [plugins.\"{PLUGIN}\".containerd.runtimes.runc.options]\n\
             SystemdCgroup = false\n\
             Root = {runc_root}\n",
            image = s(&self.sandbox_image),
            apparmor = self.disable_apparmor,
            oom = self.restrict_oom_score_adj,
            bin = q(&self.cni_bin_dir),
            conf = q(&self.cni_conf_dir),
            runc_root = q(&state.join("runc")),
        )
    }
}
