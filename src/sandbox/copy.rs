//! Copying files into and out of a live sandbox ([`Sandbox::put`], [`Sandbox::get`]): the
//! sandbox's side of `stockade cp`, over the hardened tar engine of [`crate::files`].
//!
//! # Which root
//! A running sandbox's root is its init's `/proc/<pid>/root`, with the sandbox's own mounts
//! (`/tmp`, `/workspace`, …). The init's pid comes from the session record; a pid can be
//! reused once the init is gone, so the root is opened first and the process behind the
//! pid is checked afterwards (its start time must still be the recorded one, and
//! containerd must still report the task running): a descriptor opened on a later
//! process's root is dropped unused.
//!
//! A sandbox whose task was created and not yet started (a Docker container between
//! create and start) is reached the same way: its root is set up before its command runs.
//!
//! A stopped sandbox (its task exited, not removed) has no such root: its snapshot is
//! mounted on a private directory instead, with its binds, and unmounted when the copy
//! ends (see [`super::stopped`]). Its tmpfs mounts are gone: a copy out of one shows its
//! empty mount point, a copy into one is refused.
//!
//! # Read-only places
//! A copy into a path that lies on a read-only root filesystem or in a read-only bind
//! (taken lexically from the container's stored spec, as Docker does) is refused up front
//! ([`SandboxError::ReadOnly`]); the kernel refuses what that check misses (a link into
//! a read-only place).
//!
//! # Owner and limits
//! Everything copied in is owned by the sandbox's user: the UID and GID of the process of
//! the container's stored spec (the sandbox's own UID, and the policy's group, 65534 by
//! default), mapped through the spec's user namespace when it has one. In archive mode
//! ([`PutMode::KeepOwners`], `cp -a`) each entry keeps the owner and group the archive
//! gives it, mapped through the spec's user namespace (an id it does not map refuses the
//! entry), or taken as they are without one. Either way set-ID bits are dropped, and
//! devices, FIFOs and names that leave the destination are refused (see
//! [`crate::files::put`]).
//!
//! Bytes copied in are capped by what the sandbox can hold (`capacity`): the sizes of
//! its bounded filesystems (the loop-mounted disk volumes of a writable root and a managed
//! workspace, and every tmpfs of its spec). A sandbox with none of those (no capacity can
//! be told) gets [`Limits::default`]'s 1 GiB. Bytes copied out are capped by the larger of
//! that capacity and 1 GiB (a read-only image root holds more than the sandbox may write).
//! Entries are capped at [`MAX_ENTRIES`] both ways. The filesystems themselves still end a
//! copy that does not fit (`ENOSPC`, reported as an internal error).

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;

use oci_spec::runtime::Spec;

use super::stopped::{self, Place, StoppedRoot};
use super::{Sandbox, SandboxError};
use crate::containerd::TaskStatus;
use crate::disk::{self, VolumeKind};
use crate::files::{self, GetOptions, GetSummary, Limits, OwnerMap, PutOptions, PutSummary};
use crate::procfs::ProcStat;

/// Entries (files, directories, links) one copy may hold, either way: 100 000, the tar
/// engine's default.
pub const MAX_ENTRIES: u64 = 100_000;

/// Who owns what a copy into a sandbox writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PutMode {
    /// The sandbox's user owns every entry (`docker cp`'s default gives root; stockade
    /// gives the user the sandbox's processes run as). The default.
    #[default]
    SandboxUser,
    /// Each entry keeps the owner and group of the archive (`cp -a`, Docker's
    /// `copyUIDGID`), mapped through the sandbox's user namespace when it has one.
    KeepOwners,
}

/// What a copy needs of the sandbox.
struct Target {
    root: OwnedFd,
    uid: u32,
    gid: u32,
    capacity: Option<u64>,
    spec: Spec,
    /// A stopped sandbox's mounted root, unmounted when the copy is done with it.
    mounted: Option<StoppedRoot>,
}

/// Which way a copy goes: out, or in at a sandbox path.
#[derive(Debug, Clone, Copy)]
enum Intent<'a> {
    Read,
    Write(&'a str),
}

/// Extracts the tar stream `archive` at `dst` in the sandbox (see [`Sandbox::put`]).
pub(super) async fn put<R: Read + Send + 'static>(
    sb: &Sandbox,
    dst: &str,
    archive: R,
    mode: PutMode,
) -> Result<PutSummary, SandboxError> {
    let t = target(sb, Intent::Write(dst)).await?;
    let archive_owner = match mode {
        PutMode::SandboxUser => None,
        PutMode::KeepOwners => Some(owner_map(&t.spec)),
    };
    let opts = PutOptions {
        uid: t.uid,
        gid: t.gid,
        limits: Limits {
            max_bytes: t.capacity.unwrap_or(Limits::default().max_bytes),
            max_entries: MAX_ENTRIES,
        },
        archive_owner,
    };
    let dst = dst.to_string();
    on_root(sb, t, move |root| files::put(root, &dst, archive, &opts)).await
}

/// Writes `src` of the sandbox to `out` as a tar stream (see [`Sandbox::get`]).
pub(super) async fn get<W: Write + Send + 'static>(
    sb: &Sandbox,
    src: &str,
    out: W,
    follow_link: bool,
) -> Result<GetSummary, SandboxError> {
    let t = target(sb, Intent::Read).await?;
    let default = Limits::default().max_bytes;
    let opts = GetOptions {
        follow_link,
        limits: Limits {
            max_bytes: t.capacity.map_or(default, |c| c.max(default)),
            max_entries: MAX_ENTRIES,
        },
        proc_root: sb.runner().proc_root().to_path_buf(),
    };
    let src = src.to_string();
    on_root(sb, t, move |root| files::get(root, &src, out, &opts)).await
}

/// Runs the copy `op` on the target's root on a blocking thread, then unmounts what
/// [`target`] mounted for it; its errors become the sandbox's.
async fn on_root<T: Send + 'static>(
    sb: &Sandbox,
    t: Target,
    op: impl FnOnce(&OwnedFd) -> Result<T, files::FilesError> + Send + 'static,
) -> Result<T, SandboxError> {
    let id = sb.id().to_string();
    let r = tokio::task::spawn_blocking(move || {
        let r = op(&t.root);
        drop(t.mounted);
        r
    })
    .await;
    match r {
        Ok(r) => r.map_err(|source| SandboxError::Files { id, source }),
        Err(e) => Err(SandboxError::State {
            path: std::path::PathBuf::from(id),
            source: std::io::Error::other(format!("the copy's thread ended: {e}")),
        }),
    }
}

/// What `path` of the sandbox is, as [`crate::files::stat`] tells (see [`Sandbox::stat`]).
pub(super) async fn stat(sb: &Sandbox, path: &str) -> Result<files::PathStat, SandboxError> {
    let t = target(sb, Intent::Read).await?;
    let path = path.to_string();
    on_root(sb, t, move |root| files::stat(root, &path)).await
}

/// Refuses a copy into `dst` when it lies on a read-only root or in a read-only bind of
/// `spec`, or (with `stopped`) in a tmpfs or a kernel filesystem, which a stopped sandbox
/// no longer has; whether a stopped sandbox's root must be mounted writable for it.
fn check_writable(
    sb: &Sandbox,
    spec: &Spec,
    dst: &str,
    stopped: bool,
) -> Result<bool, SandboxError> {
    let read_only = |what: String| SandboxError::ReadOnly {
        id: sb.id().to_string(),
        path: dst.to_string(),
        what,
    };
    match stopped::place(spec, dst) {
        Place::Root { read_only: true } => Err(read_only(
            "the sandbox's root filesystem is read-only".into(),
        )),
        Place::Bind {
            dest,
            read_only: true,
        } => Err(read_only(format!(
            "the bind mounted at {dest} is read-only"
        ))),
        Place::Root { read_only: false } => Ok(true),
        Place::Bind { .. } => Ok(false),
        Place::Tmpfs { dest } if stopped => Err(SandboxError::CopyNotRunning {
            id: sb.id().to_string(),
            state: format!(
                "stopped; {dest} is a tmpfs, which is gone while the sandbox is stopped"
            ),
        }),
        Place::Kernel { dest, typ } if stopped => {
            Err(read_only(format!("{dest} is a {typ} filesystem")))
        }
        Place::Tmpfs { .. } | Place::Kernel { .. } => Ok(false),
    }
}

/// The sandbox's root, owner and capacity: `/proc/<pid>/root` of a created or running
/// sandbox, its snapshot mounted for a stopped one.
async fn target(sb: &Sandbox, intent: Intent<'_>) -> Result<Target, SandboxError> {
    let not_running = |state: TaskStatus| SandboxError::CopyNotRunning {
        id: sb.id().to_string(),
        state: format!("{state:?}").to_lowercase(),
    };
    let state = sb.state().await?;
    let spec = stored_spec(sb).await?;
    let (uid, gid) = owner(&spec).ok_or_else(|| SandboxError::CorruptSpec {
        id: sb.id().to_string(),
        reason: "no process user".into(),
    })?;
    let capacity = capacity(&spec, &sb.run_dir());
    let live = matches!(state, TaskStatus::Running | TaskStatus::Created);
    if !live && state != TaskStatus::Stopped {
        return Err(not_running(state));
    }
    let writable = match intent {
        Intent::Write(dst) => check_writable(sb, &spec, dst, !live)?,
        Intent::Read => false,
    };
    if !live {
        let mut mounted = stopped::mount(sb, &spec, writable).await?;
        return Ok(Target {
            root: mounted.take_root(),
            uid,
            gid,
            capacity,
            spec,
            mounted: Some(mounted),
        });
    }
    let root_dir = sb.root_dir();
    let root = files::open_root(&root_dir).map_err(|source| SandboxError::Files {
        id: sb.id().to_string(),
        source,
    });
    // Checked after the open: a pid reused meanwhile shows another start time.
    let proc_root = sb.runner().proc_root();
    let same = match ProcStat::read(proc_root, sb.task_pid()) {
        Some(st) if !st.has_exited() => match sb.record().pid_start {
            Some(want) => st.start_time == Some(want),
            None => true,
        },
        _ => false,
    };
    if !same {
        return Err(not_running(TaskStatus::Stopped));
    }
    let root = root?;
    let now = sb.state().await?;
    if now != state {
        return Err(not_running(now));
    }
    Ok(Target {
        root,
        uid,
        gid,
        capacity,
        spec,
        mounted: None,
    })
}

/// The spec's user namespace maps, for an archive's owners. Pure.
fn owner_map(spec: &Spec) -> OwnerMap {
    let ranges = |maps: Option<&Vec<oci_spec::runtime::LinuxIdMapping>>| {
        maps.into_iter()
            .flatten()
            .map(|m| (m.container_id(), m.host_id(), m.size()))
            .collect()
    };
    let linux = spec.linux().as_ref();
    OwnerMap {
        uids: ranges(linux.and_then(|l| l.uid_mappings().as_ref())),
        gids: ranges(linux.and_then(|l| l.gid_mappings().as_ref())),
    }
}

/// The spec the sandbox's container holds.
async fn stored_spec(sb: &Sandbox) -> Result<Spec, SandboxError> {
    let id = sb.id().to_string();
    let container = match sb.runner().containerd().get_container(&id).await {
        Ok(c) => c,
        Err(e) if e.is_not_found() => return Err(SandboxError::NotFound(id)),
        Err(e) => return Err(e.into()),
    };
    let corrupt = |reason: String| SandboxError::CorruptSpec {
        id: id.clone(),
        reason,
    };
    let any = container.spec.ok_or_else(|| corrupt("none".into()))?;
    serde_json::from_slice(&any.value).map_err(|e| corrupt(e.to_string()))
}

/// The host UID and GID of the spec's process user: its own ids, or the host ids its user
/// namespace maps them to. `None` without a process, or with ids the maps leave out.
/// Pure.
fn owner(spec: &Spec) -> Option<(u32, u32)> {
    let user = spec.process().as_ref()?.user();
    let linux = spec.linux().as_ref();
    let map = |id: u32, maps: Option<&Vec<oci_spec::runtime::LinuxIdMapping>>| match maps {
        Some(m) if !m.is_empty() => m.iter().find_map(|m| {
            let off = id.checked_sub(m.container_id())?;
            (off < m.size()).then(|| m.host_id() + off)
        }),
        _ => Some(id),
    };
    Some((
        map(user.uid(), linux.and_then(|l| l.uid_mappings().as_ref()))?,
        map(user.gid(), linux.and_then(|l| l.gid_mappings().as_ref()))?,
    ))
}

/// What the sandbox can hold, in bytes: the sizes of its mounted disk volumes (under its
/// run directory `run_dir`) and of every tmpfs of `spec` (`size=` options). `None` when it
/// has none of them.
fn capacity(spec: &Spec, run_dir: &Path) -> Option<u64> {
    let volumes = [VolumeKind::Root, VolumeKind::Workspace]
        .into_iter()
        .filter_map(|k| mounted_size(&disk::mount_path(run_dir, k)));
    let tmpfs = spec
        .mounts()
        .iter()
        .flatten()
        .filter(|m| m.typ().as_deref() == Some("tmpfs"))
        .filter_map(|m| m.options().as_ref()?.iter().find_map(|o| tmpfs_size(o)));
    let total = volumes.chain(tmpfs).fold(0u64, u64::saturating_add);
    (total > 0).then_some(total)
}

/// The size of the filesystem mounted at `path`; `None` when nothing is mounted there (it
/// is missing, or on its parent's filesystem).
fn mounted_size(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let here = std::fs::metadata(path).ok()?;
    let parent = std::fs::metadata(path.parent()?).ok()?;
    if here.dev() == parent.dev() {
        return None;
    }
    let st = rustix::fs::statvfs(path).ok()?;
    Some(st.f_blocks.saturating_mul(st.f_frsize))
}

/// The bytes of a tmpfs `size=N[kmg]` option. Pure.
fn tmpfs_size(option: &str) -> Option<u64> {
    let v = option.strip_prefix("size=")?;
    let (num, unit) = match v.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => v.split_at(i),
        None => (v, ""),
    };
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{
        LinuxBuilder, LinuxIdMappingBuilder, MountBuilder, ProcessBuilder, SpecBuilder, UserBuilder,
    };

    #[test]
    fn tmpfs_sizes_are_read_with_their_units() {
        for (opt, want) in [
            ("size=65536k", Some(64 << 20)),
            ("size=1m", Some(1 << 20)),
            ("size=2G", Some(2 << 30)),
            ("size=4096", Some(4096)),
            ("size=10%", None),
            ("size=", None),
            ("mode=755", None),
            ("size=99999999999999999999g", None),
        ] {
            assert_eq!(tmpfs_size(opt), want, "{opt}");
        }
    }

    fn spec_with(uid: u32, gid: u32, mapped: Option<(u32, u32)>) -> Spec {
        let user = UserBuilder::default().uid(uid).gid(gid).build().unwrap();
        let process = ProcessBuilder::default().user(user).build().unwrap();
        let mut linux = LinuxBuilder::default();
        if let Some((host, size)) = mapped {
            let m = LinuxIdMappingBuilder::default()
                .container_id(0u32)
                .host_id(host)
                .size(size)
                .build()
                .unwrap();
            linux = linux.uid_mappings(vec![m]).gid_mappings(vec![m]);
        }
        let tmp = MountBuilder::default()
            .destination("/tmp")
            .typ("tmpfs")
            .options(vec!["nosuid".to_string(), "size=1024k".to_string()])
            .build()
            .unwrap();
        SpecBuilder::default()
            .process(process)
            .linux(linux.build().unwrap())
            .mounts(vec![tmp])
            .build()
            .unwrap()
    }

    #[test]
    fn the_owner_is_the_process_user_mapped_through_a_user_namespace() {
        assert_eq!(
            owner(&spec_with(100123, 65534, None)),
            Some((100123, 65534))
        );
        assert_eq!(
            owner(&spec_with(1000, 1000, Some((200000, 65536)))),
            Some((201000, 201000))
        );
        assert_eq!(
            owner(&spec_with(70000, 0, Some((200000, 65536)))),
            None,
            "an id the map leaves out has no host owner"
        );
    }

    #[test]
    fn capacity_counts_tmpfs_sizes_and_ignores_unmounted_volumes() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join(disk::ROOT_MOUNT)).unwrap();
        assert_eq!(
            capacity(&spec_with(1, 1, None), t.path()),
            Some(1 << 20),
            "a plain directory is not a mounted volume"
        );
        let bare = SpecBuilder::default().mounts(vec![]).build().unwrap();
        assert_eq!(capacity(&bare, t.path()), None);
    }
}
