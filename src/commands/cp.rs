//! `stockade cp [-a] [-L] SRC DST`: copy files between the host and a live sandbox, with
//! `docker cp`'s forms. Exactly one side is `NAME_OR_ID:PATH`; the other is a host path or
//! `-`, a tar stream on stdin (into the sandbox) or stdout (out of it).
//!
//! - Host to sandbox: the host path (a file, a directory or a link; `-L` follows it when
//!   it is a link; `DIR/.` copies a directory's contents) is archived with the `tar` crate
//!   as it is read, never following a link below the top, and streamed into
//!   `Sandbox::put`.
//! - Sandbox to host: `Sandbox::get`'s stream goes to stdout, or is extracted into the host
//!   path by the same engine that writes into sandboxes (`stockade::files::put`), rooted at
//!   the destination's parent directory: `docker cp`'s destination rules, and no entry can
//!   leave that directory (no `..`, no absolute names, no writing through links, no device
//!   nodes, set-ID bits dropped). What lands is owned by the invoking user, as with
//!   `docker cp`.
//!
//! - `-a` (archive mode): what lands keeps the owner and group of its source (the host
//!   file's, the archive's, the sandbox file's), mapped through the sandbox's user
//!   namespace when it has one, instead of the sandbox's user (into a sandbox) or the
//!   invoking user (out of one). Set-ID bits are still dropped and devices, FIFOs and
//!   escaping names still refused.
//!
//! Every failure (unknown sandbox, a path that does not exist, a malformed or refused
//! archive, a stopped sandbox) is exit 125 and one line.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;

use stockade::files::{self, FilesError, OwnerMap, PutOptions};
use stockade::sandbox::PutMode;

use super::sandbox::{one_line, sandboxes, Place};

#[derive(Debug, Args)]
pub struct CpArgs {
    /// Follow SRC when it is a symbolic link (in the sandbox or on the host) [default: copy
    /// the link itself].
    #[arg(short = 'L', long = "follow-link")]
    pub follow_link: bool,
    /// Archive mode: keep the owner and group of the source [default: the sandbox's user
    /// owns what is copied in, the invoking user what is copied out].
    #[arg(short = 'a', long = "archive")]
    pub archive: bool,
    /// `NAME_OR_ID:PATH`, a host path, or `-` (a tar stream on stdin).
    #[arg(value_name = "SRC", allow_hyphen_values = true)]
    pub src: String,
    /// `NAME_OR_ID:PATH`, a host path, or `-` (a tar stream on stdout).
    #[arg(value_name = "DST", allow_hyphen_values = true)]
    pub dst: String,
    #[command(flatten)]
    pub place: Place,
}

/// One side of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Side {
    /// `-`: a tar stream on stdin or stdout.
    Stream,
    /// A host path.
    Host(String),
    /// `NAME_OR_ID:PATH`.
    Sandbox { sandbox: String, path: String },
}

impl Side {
    /// `docker cp`'s reading: `-` is the stream; a path starting with `/` or `.` is the
    /// host's; otherwise text before the first `:` names a sandbox. Pure.
    fn parse(arg: &str) -> Side {
        if arg == "-" {
            return Side::Stream;
        }
        if arg.starts_with('/') || arg.starts_with('.') {
            return Side::Host(arg.to_string());
        }
        match arg.split_once(':') {
            Some((sandbox, path)) if !sandbox.is_empty() && !sandbox.contains('/') => {
                Side::Sandbox {
                    sandbox: sandbox.to_string(),
                    path: path.to_string(),
                }
            }
            _ => Side::Host(arg.to_string()),
        }
    }
}

pub async fn run(args: CpArgs) -> Result<u8> {
    let (src, dst) = (Side::parse(&args.src), Side::parse(&args.dst));
    let mode = match args.archive {
        true => PutMode::KeepOwners,
        false => PutMode::SandboxUser,
    };
    match (src, dst) {
        (Side::Sandbox { sandbox, path }, host @ (Side::Stream | Side::Host(_))) => {
            check_path(&path)?;
            let sandboxes = sandboxes(&args.place, None, None).await?;
            let sb = sandboxes.get(&sandbox).await.map_err(one_line)?;
            match host {
                Side::Stream => {
                    // `get` takes its writer by value: a pipe, pumped to stdout here.
                    let (mut rx, tx) = pipe()?;
                    let pump = std::thread::spawn(move || {
                        let mut w = std::io::BufWriter::with_capacity(64 << 10, std::io::stdout());
                        std::io::copy(&mut rx, &mut w)?;
                        w.flush()
                    });
                    let got = sb.get(&path, tx, args.follow_link).await;
                    let pumped = pump.join();
                    got.map_err(one_line)?;
                    pumped
                        .map_err(|_| anyhow!("writing to stdout: the writer panicked"))?
                        .context("writing to stdout")?;
                }
                Side::Host(dest) => {
                    let (parent, within) = split_host_dest(&dest);
                    let root = files::open_root(&parent).map_err(|e| host_error(&dest, e))?;
                    let (rx, tx) = pipe()?;
                    let opts = PutOptions {
                        uid: nix::unistd::getuid().as_raw(),
                        gid: nix::unistd::getgid().as_raw(),
                        limits: files::Limits::default(),
                        archive_owner: args.archive.then(OwnerMap::default),
                    };
                    let extract =
                        tokio::task::spawn_blocking(move || files::put(&root, &within, rx, &opts));
                    let got = sb.get(&path, tx, args.follow_link).await;
                    let put = extract.await.context("extracting on the host")?;
                    match (got, put) {
                        (Ok(_), Ok(_)) => {}
                        (Err(g), Ok(_)) => return Err(one_line(g)),
                        // The sandbox's error explains a cut stream better than the
                        // extractor's; a refused entry cuts the sandbox's writes short.
                        (Err(g), Err(FilesError::BadArchive { .. })) => return Err(one_line(g)),
                        (_, Err(p)) => return Err(host_error(&dest, p)),
                    }
                }
                Side::Sandbox { .. } => unreachable!("matched above"),
            }
            Ok(0)
        }
        (host @ (Side::Stream | Side::Host(_)), Side::Sandbox { sandbox, path }) => {
            check_path(&path)?;
            let sandboxes = sandboxes(&args.place, None, None).await?;
            let sb = sandboxes.get(&sandbox).await.map_err(one_line)?;
            match host {
                Side::Stream => {
                    sb.put_as(&path, std::io::stdin(), mode)
                        .await
                        .map_err(one_line)?;
                }
                Side::Host(src) => {
                    let top = host_source(&src, args.follow_link)?;
                    let (rx, tx) = pipe()?;
                    let build = std::thread::spawn(move || archive(&top, tx));
                    let put = sb.put_as(&path, rx, mode).await;
                    let built = build
                        .join()
                        .map_err(|_| anyhow!("{src}: archiving panicked"))?;
                    // A host read error cuts the stream; say that rather than "truncated".
                    match (built, put) {
                        (Err(e), _) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                            bail!("{src}: {e}")
                        }
                        (_, Err(e)) => return Err(one_line(e)),
                        (Err(e), Ok(_)) => bail!("{src}: {e}"),
                        (Ok(()), Ok(_)) => {}
                    }
                }
                Side::Sandbox { .. } => unreachable!("matched above"),
            }
            Ok(0)
        }
        (Side::Sandbox { .. }, Side::Sandbox { .. }) => {
            bail!("copying between two sandboxes is not supported; copy through the host")
        }
        _ => bail!("one of SRC and DST must be NAME_OR_ID:PATH, a path in a sandbox"),
    }
}

/// A pipe: its read end, its write end.
fn pipe() -> Result<(std::fs::File, std::fs::File)> {
    let (r, w) = nix::unistd::pipe().context("making a pipe")?;
    Ok((r.into(), w.into()))
}

fn check_path(path: &str) -> Result<()> {
    if path.is_empty() {
        bail!("NAME_OR_ID:PATH: the path in the sandbox is empty");
    }
    Ok(())
}

/// A host-side engine error, naming the host path.
fn host_error(dest: &str, e: FilesError) -> anyhow::Error {
    anyhow!("{dest}: {e}")
}

/// The directory a host destination is resolved in, and the destination within it as the
/// engine takes it (its last component, with a trailing `/` or `/.` kept). Pure.
fn split_host_dest(dest: &str) -> (PathBuf, String) {
    let trimmed = dest.trim_end_matches('/');
    if trimmed.is_empty() {
        return (PathBuf::from("/"), "/".to_string());
    }
    match trimmed.rfind('/') {
        Some(0) => (PathBuf::from("/"), dest[1..].to_string()),
        Some(i) => (PathBuf::from(&dest[..i]), dest[i + 1..].to_string()),
        None => (PathBuf::from("."), dest.to_string()),
    }
}

/// What to archive from the host.
struct HostTop {
    /// The path read (the link's target when `-L` followed it).
    path: PathBuf,
    /// The archive name of the top: the source's last component, or `.` for `DIR/.`.
    name: String,
    /// A directory (archived with everything under it).
    dir: bool,
}

/// Checks the host source and names its top entry.
fn host_source(src: &str, follow_link: bool) -> Result<HostTop> {
    let contents = src == "." || src.ends_with("/.");
    let trimmed = src.trim_end_matches('/');
    let path = Path::new(src);
    let meta = match follow_link || contents || src.ends_with('/') {
        true => std::fs::metadata(path),
        false => std::fs::symlink_metadata(path),
    }
    .map_err(|e| anyhow!("{src}: {e}"))?;
    if contents && !meta.is_dir() {
        bail!("{src}: not a directory");
    }
    let name = if contents {
        ".".to_string()
    } else {
        match Path::new(trimmed).file_name() {
            Some(n) => n.to_string_lossy().into_owned(),
            None => bail!("{src}: name a file or a directory (or DIR/. for its contents)"),
        }
    };
    let path = match follow_link && meta.file_type().is_dir() {
        // The directory walk starts at a real directory, not at a link to one.
        true => std::fs::canonicalize(path).map_err(|e| anyhow!("{src}: {e}"))?,
        false => path.to_path_buf(),
    };
    Ok(HostTop {
        dir: meta.is_dir(),
        name,
        path,
    })
}

/// Writes `top` to `out` as a tar stream; links below the top are stored as links.
fn archive(top: &HostTop, out: impl Write) -> std::io::Result<()> {
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Complete);
    if top.dir {
        b.append_dir_all(&top.name, &top.path)?;
    } else {
        let meta = std::fs::symlink_metadata(&top.path)?;
        if meta.file_type().is_symlink() || meta.is_file() {
            b.append_path_with_name(&top.path, &top.name)?;
        } else {
            return Err(std::io::Error::other(
                "not a regular file, a directory or a symbolic link",
            ));
        }
    }
    b.into_inner()?.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_are_read_as_docker_cp_reads_them() {
        let sb = |s: &str, p: &str| Side::Sandbox {
            sandbox: s.into(),
            path: p.into(),
        };
        let host = |p: &str| Side::Host(p.into());
        for (arg, want) in [
            ("-", Side::Stream),
            ("box:/etc/hosts", sb("box", "/etc/hosts")),
            ("stk-0123:/tmp/", sb("stk-0123", "/tmp/")),
            ("box:", sb("box", "")),
            ("/tmp/a:b", host("/tmp/a:b")),
            ("./a:b", host("./a:b")),
            ("dir/a:b", host("dir/a:b")),
            ("plain", host("plain")),
            (":x", host(":x")),
        ] {
            assert_eq!(Side::parse(arg), want, "{arg}");
        }
    }

    #[test]
    fn a_host_destination_is_split_at_its_last_component() {
        for (dest, parent, within) in [
            ("/tmp/out", "/tmp", "out"),
            ("/tmp/out/", "/tmp", "out/"),
            ("/tmp/out/.", "/tmp/out", "."),
            ("/out", "/", "out"),
            ("/", "/", "/"),
            ("out", ".", "out"),
            (".", ".", "."),
            ("a/b//", "a", "b//"),
        ] {
            assert_eq!(
                split_host_dest(dest),
                (PathBuf::from(parent), within.to_string()),
                "{dest}"
            );
        }
    }
}
