//! Group networks: named networks whose members reach each other and nothing else.
//!
//! `stockade network create NAME` makes `<groups>/<NAME>/` (default
//! [`super::DEFAULT_GROUPS`], host-wide beside the address claims) holding `group.json` and
//! the group's `hosts` file. A sandbox whose policy says `mode = "group"`, `group = NAME`
//! gets the same routed veth and /31 as an `egress` sandbox, and its network record names
//! the group: membership is nothing but the live records, so a crashed member stops being
//! one when its claim is reclaimed. The nftables table lets a member's veth forward only to
//! the veths of its own group's members, to their addresses (see [`super::nft::render`]);
//! the host, the outside, metadata and other groups stay dropped.
//!
//! Names: every member's `/etc/hosts` is the group's `hosts` file, bind-mounted read-only.
//! It lists each live member's address with its sandbox id and, for a named session, its
//! name; it is rewritten in place (the same inode, so every member's mount sees it) each
//! time the table is, so a member that joins later is resolvable by the earlier ones from
//! then on, and one that left is gone from it.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{NetRecord, NetworkError, NetworkMode};

/// The record of a group in its directory.
pub const GROUP_FILE: &str = "group.json";
/// The group's hosts file, every member's `/etc/hosts`.
pub const HOSTS_FILE: &str = "hosts";
/// Longest group name.
pub const MAX_NAME_LEN: usize = 32;

/// Words `--network` takes as modes rather than as group names; none of them can name a
/// group.
pub const MODE_WORDS: &[&str] = &[
    "none",
    "loopback",
    "egress",
    "allowlist",
    "group",
    "host",
    "bridge",
    "default",
];

/// Whether `--network WORD` means a mode (possibly an unknown one) rather than a group.
pub fn is_mode_word(word: &str) -> bool {
    MODE_WORDS.contains(&word) || validate_name(word).is_err()
}

/// Checks a group name: 1 to [`MAX_NAME_LEN`] characters from `[a-z0-9_-]`, starting with
/// a letter or digit, and not one of [`MODE_WORDS`].
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!(
            "`{name}`: a network name has 1 to {MAX_NAME_LEN} characters"
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        return Err(format!(
            "`{name}`: a network name is lower-case letters, digits, `-` and `_`, starting \
             with a letter or digit"
        ));
    }
    if MODE_WORDS.contains(&name) {
        return Err(format!("`{name}` is a network mode, not a network name"));
    }
    Ok(())
}

/// `network.group` for `mode`: required with `group`, refused without it.
pub fn parse_group(mode: NetworkMode, group: Option<&str>) -> Result<Option<String>, String> {
    match (mode, group) {
        (NetworkMode::Group, Some(name)) => validate_name(name).map(|()| Some(name.to_string())),
        (NetworkMode::Group, None) => {
            Err("mode `group` needs the name of a group network (`group = \"NAME\"`)".into())
        }
        (_, Some(name)) => Err(format!(
            "`{name}`: a group is only joined with mode `group`; the mode is {}",
            mode.as_str()
        )),
        (_, None) => Ok(None),
    }
}

/// What `group.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupRecord {
    /// The group's name.
    pub name: String,
    /// Milliseconds since the epoch.
    pub created_ms: u64,
}

/// One live member of a group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Member {
    /// Its address on its veth.
    pub address: Ipv4Addr,
    /// The sandbox id and, for a named session, its name.
    pub names: Vec<String>,
    /// Host side of its veth.
    pub veth: String,
}

/// A group and its live members, as `network ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupInfo {
    /// The group's name.
    pub name: String,
    /// When it was made, milliseconds since the epoch.
    pub created_ms: u64,
    /// Its live members, by address.
    pub members: Vec<Member>,
}

/// The directory of group `name`.
pub fn dir(groups: &Path, name: &str) -> PathBuf {
    groups.join(name)
}

/// The hosts file of group `name`.
pub fn hosts_path(groups: &Path, name: &str) -> PathBuf {
    dir(groups, name).join(HOSTS_FILE)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> NetworkError + '_ {
    move |source| NetworkError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Makes group `name`; one that exists already is refused.
pub fn create(groups: &Path, name: &str) -> Result<GroupRecord, NetworkError> {
    validate_name(name).map_err(|message| NetworkError::Group {
        name: name.to_string(),
        message,
    })?;
    super::make_dir(groups)?;
    let d = dir(groups, name);
    match std::fs::create_dir(&d) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(NetworkError::Group {
                name: name.to_string(),
                message: "a network of this name exists already".into(),
            })
        }
        Err(e) => return Err(io(&d)(e)),
    }
    let record = GroupRecord {
        name: name.to_string(),
        created_ms: crate::runner::session::now_ms(),
    };
    let hosts = hosts_path(groups, name);
    std::fs::write(&hosts, render_hosts(&[]))
        .and_then(|()| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&hosts, std::fs::Permissions::from_mode(0o644))
        })
        .map_err(io(&hosts))?;
    let file = d.join(GROUP_FILE);
    std::fs::write(
        &file,
        serde_json::to_vec_pretty(&record).expect("a group record always serializes"),
    )
    .map_err(io(&file))?;
    Ok(record)
}

/// The record of group `name`, or why there is none.
pub fn read(groups: &Path, name: &str) -> Result<GroupRecord, NetworkError> {
    let file = dir(groups, name).join(GROUP_FILE);
    match std::fs::read(&file) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| NetworkError::Record {
            path: file,
            message: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(NetworkError::Group {
            name: name.to_string(),
            message: "no such network (make it with `stockade network create`)".into(),
        }),
        Err(e) => Err(io(&file)(e)),
    }
}

/// The live members of each group among `records`, sorted by address.
pub fn members_of(records: &[NetRecord], name: &str) -> Vec<Member> {
    let mut out: Vec<Member> = records
        .iter()
        .filter(|r| r.group.as_deref() == Some(name))
        .map(|r| Member {
            address: r.sandbox_addr,
            names: r.names.clone(),
            veth: r.veth.clone(),
        })
        .collect();
    out.sort();
    out
}

/// Every group in `groups` with its live members among `records`, sorted by name.
pub fn list(groups: &Path, records: &[NetRecord]) -> Vec<GroupInfo> {
    let Ok(entries) = std::fs::read_dir(groups) else {
        return Vec::new();
    };
    let mut out: Vec<GroupInfo> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let r = read(groups, &name).ok()?;
            Some(GroupInfo {
                members: members_of(records, &name),
                name,
                created_ms: r.created_ms,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Removes group `name` unless it has live members among `records` (refused as Docker
/// does: the network has active endpoints).
pub fn remove(groups: &Path, name: &str, records: &[NetRecord]) -> Result<(), NetworkError> {
    read(groups, name)?;
    let members = members_of(records, name);
    if !members.is_empty() {
        let ids: Vec<&str> = members
            .iter()
            .filter_map(|m| m.names.first().map(String::as_str))
            .collect();
        return Err(NetworkError::Group {
            name: name.to_string(),
            message: format!("has active endpoints: {}", ids.join(", ")),
        });
    }
    let d = dir(groups, name);
    std::fs::remove_dir_all(&d)
        .or_else(super::gone_ok)
        .map_err(io(&d))
}

/// The hosts file of a group with `members`. Pure.
pub fn render_hosts(members: &[Member]) -> String {
    let mut t = String::from("127.0.0.1\tlocalhost\n");
    for m in members {
        t.push_str(&format!("{}\t{}\n", m.address, m.names.join(" ")));
    }
    t
}

/// Rewrites the hosts file of every group in `groups` from `records`, in place (the inode
/// stays: members have it bind-mounted) and only where it changed.
pub fn write_hosts(groups: &Path, records: &[NetRecord]) -> Result<(), NetworkError> {
    use std::io::Write;
    for g in list(groups, records) {
        let path = hosts_path(groups, &g.name);
        let text = render_hosts(&g.members);
        if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
            continue;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.set_len(text.len() as u64))
            .map_err(io(&path))?;
    }
    Ok(())
}

/// Mounts the group's hosts file at `/etc/hosts` in `spec`, read-only.
pub fn mount_hosts(spec: &mut oci_spec::runtime::Spec, hosts: &Path) {
    super::bind_file_ro(spec, Path::new("/etc/hosts"), hosts);
}

/// The names a sandbox is known by in its group: its id, then the session name that
/// `<fifo_root>/names/` links to it, if any.
pub fn member_names(fifo_root: &Path, id: &str) -> Vec<String> {
    let mut names = vec![id.to_string()];
    if let Ok(entries) = std::fs::read_dir(fifo_root.join("names")) {
        for e in entries.flatten() {
            if std::fs::read_link(e.path()).is_ok_and(|t| t == Path::new(id)) {
                if let Some(n) = e.file_name().to_str() {
                    names.push(n.to_string());
                }
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_mode_words_are_not_names() {
        for ok in ["agents", "team-1", "a", "x_y"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
            assert!(!is_mode_word(ok), "{ok}");
        }
        for bad in [
            "",
            "Agents",
            "-x",
            "a.b",
            "a/b",
            &"x".repeat(33),
            "egress",
            "host",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
            assert!(is_mode_word(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_group_needs_its_mode_and_the_mode_its_group() {
        assert_eq!(
            parse_group(NetworkMode::Group, Some("a")),
            Ok(Some("a".into()))
        );
        assert!(parse_group(NetworkMode::Group, None)
            .unwrap_err()
            .contains("group = "));
        assert!(parse_group(NetworkMode::Egress, Some("a"))
            .unwrap_err()
            .contains("mode is egress"));
        assert_eq!(parse_group(NetworkMode::None, None), Ok(None));
    }

    fn rec(slot: u32, group: Option<&str>, names: &[&str]) -> NetRecord {
        NetRecord {
            mode: if group.is_some() {
                NetworkMode::Group
            } else {
                NetworkMode::Egress
            },
            netns: PathBuf::from(format!("/run/stockade/netns/stk-{slot}")),
            claims: PathBuf::from("/run/stockade/net"),
            slot,
            veth: format!("stkv{slot}"),
            host_addr: Ipv4Addr::new(10, 199, 0, (slot * 2) as u8),
            sandbox_addr: Ipv4Addr::new(10, 199, 0, (slot * 2 + 1) as u8),
            range: super::super::DEFAULT_RANGE,
            allow: vec![],
            group: group.map(String::from),
            hosts: None,
            names: names.iter().map(ToString::to_string).collect(),
            published: vec![],
            proxy_pid: None,
            entries: vec![],
            dns: None,
        }
    }

    #[test]
    fn create_list_and_remove_follow_the_live_members() {
        let t = tempfile::tempdir().unwrap();
        let g = t.path().join("groups");
        create(&g, "team").unwrap();
        create(&g, "other").unwrap();
        let e = create(&g, "team").unwrap_err().to_string();
        assert!(e.contains("team") && e.contains("exists"), "{e}");
        assert!(read(&g, "nope")
            .unwrap_err()
            .to_string()
            .contains("no such"));

        let records = vec![
            rec(3, Some("team"), &["stk-b", "web"]),
            rec(1, Some("team"), &["stk-a"]),
            rec(2, None, &["stk-c"]),
        ];
        let l = list(&g, &records);
        assert_eq!(
            l.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(),
            ["other", "team"]
        );
        assert_eq!(l[1].members.len(), 2);
        assert_eq!(l[1].members[0].address, Ipv4Addr::new(10, 199, 0, 3));

        write_hosts(&g, &records).unwrap();
        let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        let before = ino(&hosts_path(&g, "team"));
        assert_eq!(
            std::fs::read_to_string(hosts_path(&g, "team")).unwrap(),
            "127.0.0.1\tlocalhost\n10.199.0.3\tstk-a\n10.199.0.7\tstk-b web\n"
        );
        // A member leaves: the same file shrinks.
        write_hosts(&g, &records[1..]).unwrap();
        assert_eq!(
            std::fs::read_to_string(hosts_path(&g, "team")).unwrap(),
            "127.0.0.1\tlocalhost\n10.199.0.3\tstk-a\n"
        );
        assert_eq!(ino(&hosts_path(&g, "team")), before);

        let e = remove(&g, "team", &records).unwrap_err().to_string();
        assert!(e.contains("has active endpoints: stk-a, stk-b"), "{e}");
        remove(&g, "team", &records[2..]).unwrap();
        assert!(!dir(&g, "team").exists());
        assert!(remove(&g, "team", &[]).is_err());
    }
}
