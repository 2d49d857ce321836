//! A lenient view of an OCI runtime spec: only the fields the audit reads, every one
//! optional, enum-like values kept as strings. A field missing from the JSON stays `None`
//! ("absent"), never a runtime's default; a capability, rlimit or seccomp action this crate
//! has never heard of is still read and judged.
//!
//! Unknown fields are ignored on purpose (no `deny_unknown_fields`): this is a foreign
//! format that grows with every runtime-spec release, not a stockade config.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SpecView {
    pub process: Option<ProcessView>,
    pub root: Option<RootView>,
    pub mounts: Option<Vec<MountView>>,
    pub hooks: Option<HooksView>,
    pub linux: Option<LinuxView>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ProcessView {
    pub user: Option<UserView>,
    pub capabilities: Option<CapabilitiesView>,
    pub rlimits: Option<Vec<RlimitView>>,
    pub no_new_privileges: Option<bool>,
    pub apparmor_profile: Option<String>,
    pub selinux_label: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UserView {
    pub uid: Option<u64>,
}

/// The five capability sets, in the order the runtime spec lists them.
pub(crate) const CAP_SETS: [&str; 5] = [
    "bounding",
    "effective",
    "inheritable",
    "permitted",
    "ambient",
];

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct CapabilitiesView {
    pub bounding: Option<Vec<String>>,
    pub effective: Option<Vec<String>>,
    pub inheritable: Option<Vec<String>>,
    pub permitted: Option<Vec<String>>,
    pub ambient: Option<Vec<String>>,
}

impl CapabilitiesView {
    /// The set named `name` (one of [`CAP_SETS`]).
    pub fn set(&self, name: &str) -> &[String] {
        let s = match name {
            "bounding" => &self.bounding,
            "effective" => &self.effective,
            "inheritable" => &self.inheritable,
            "permitted" => &self.permitted,
            "ambient" => &self.ambient,
            _ => &None,
        };
        s.as_deref().unwrap_or_default()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RlimitView {
    #[serde(rename = "type")]
    pub typ: String,
    pub hard: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct RootView {
    pub readonly: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct MountView {
    pub destination: Option<String>,
    #[serde(rename = "type")]
    pub typ: Option<String>,
    pub source: Option<String>,
    pub options: Option<Vec<String>>,
}

impl MountView {
    pub fn has_option(&self, opt: &str) -> bool {
        self.options.iter().flatten().any(|o| o == opt)
    }

    /// A bind mount: type `bind`, or an option `bind`/`rbind` (runc accepts either).
    pub fn is_bind(&self) -> bool {
        self.typ.as_deref() == Some("bind") || self.has_option("bind") || self.has_option("rbind")
    }

    /// Read-only: the last of `ro`/`rw` wins, as in mount(8); neither means read-write.
    pub fn is_read_only(&self) -> bool {
        self.options
            .iter()
            .flatten()
            .rev()
            .find(|o| *o == "ro" || *o == "rw")
            .is_some_and(|o| o == "ro")
    }
}

/// The hook kinds of the runtime spec, in lifecycle order.
pub(crate) const HOOK_KINDS: [&str; 6] = [
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HooksView {
    pub prestart: Option<Vec<HookView>>,
    pub create_runtime: Option<Vec<HookView>>,
    pub create_container: Option<Vec<HookView>>,
    pub start_container: Option<Vec<HookView>>,
    pub poststart: Option<Vec<HookView>>,
    pub poststop: Option<Vec<HookView>>,
}

impl HooksView {
    pub fn kind(&self, kind: &str) -> &[HookView] {
        let h = match kind {
            "prestart" => &self.prestart,
            "createRuntime" => &self.create_runtime,
            "createContainer" => &self.create_container,
            "startContainer" => &self.start_container,
            "poststart" => &self.poststart,
            "poststop" => &self.poststop,
            _ => &None,
        };
        h.as_deref().unwrap_or_default()
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct HookView {
    pub path: Option<String>,
    pub args: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LinuxView {
    pub namespaces: Option<Vec<NamespaceView>>,
    pub uid_mappings: Option<Vec<IdMappingView>>,
    pub resources: Option<ResourcesView>,
    pub sysctl: Option<BTreeMap<String, String>>,
    pub seccomp: Option<SeccompView>,
    pub rootfs_propagation: Option<String>,
    pub masked_paths: Option<Vec<String>>,
    pub readonly_paths: Option<Vec<String>>,
    pub devices: Option<Vec<DeviceView>>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct NamespaceView {
    #[serde(rename = "type")]
    pub typ: String,
    pub path: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct IdMappingView {
    #[serde(rename = "containerID")]
    pub container_id: u64,
    #[serde(rename = "hostID")]
    pub host_id: u64,
    pub size: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct ResourcesView {
    pub devices: Option<Vec<DeviceRuleView>>,
    pub memory: Option<MemoryView>,
    pub cpu: Option<CpuView>,
    pub pids: Option<PidsView>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct DeviceRuleView {
    pub allow: bool,
    #[serde(rename = "type")]
    pub typ: Option<String>,
    pub major: Option<i64>,
    pub minor: Option<i64>,
    pub access: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct MemoryView {
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct CpuView {
    pub quota: Option<i64>,
    pub period: Option<u64>,
    pub cpus: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct PidsView {
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SeccompView {
    pub default_action: String,
    pub syscalls: Option<Vec<SyscallRuleView>>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct SyscallRuleView {
    pub names: Vec<String>,
    pub action: String,
    pub args: Option<Vec<SeccompArgView>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SeccompArgView {
    pub index: u64,
    pub value: u64,
    pub value_two: Option<u64>,
    pub op: String,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct DeviceView {
    pub path: Option<String>,
    #[serde(rename = "type")]
    pub typ: Option<String>,
    pub major: Option<i64>,
    pub minor: Option<i64>,
}
