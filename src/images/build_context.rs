//! The build context of `stockade image build -f`: which files a `COPY` or `ADD` may read
//! (the context directory minus what `.dockerignore` excludes, nothing outside it, no
//! symbolic link out of it), and the layer tarball a `COPY`/`ADD` step becomes.
//!
//! `.dockerignore` follows Docker: one pattern a line, `#` comments, `*` and `?` within a
//! path component, `**` for any number of components, a leading `!` re-including what an
//! earlier pattern excluded; the last matching pattern wins, and a pattern matching a
//! directory matches everything under it.
//!
//! A layer holds regular files, directories and symbolic links (copied as links, never
//! followed), owned by `0:0` or by `--chown`'s numeric IDs, with their permission bits
//! (setuid and setgid dropped) and modification times. The cache digest of a step's
//! sources covers paths, kinds, modes, link targets and contents, not times.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::layer::Hashing;

/// Why a source cannot be copied; one line naming it.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// The source leaves the context (`../x`, an absolute path out, a link out).
    #[error("{source_path}: outside the build context")]
    Outside {
        /// The source as written.
        source_path: String,
    },
    /// Nothing in the context matches it (or `.dockerignore` excludes it).
    #[error("{source_path}: not found in the build context")]
    NotFound {
        /// The source as written.
        source_path: String,
    },
    /// Something else on the way.
    #[error("{reason}")]
    Other {
        /// One line.
        reason: String,
    },
}

fn other(what: impl std::fmt::Display, e: impl std::fmt::Display) -> ContextError {
    ContextError::Other {
        reason: format!("{what}: {e}"),
    }
}

/// The `.dockerignore` patterns of a context.
#[derive(Debug, Clone, Default)]
pub struct Ignore {
    /// (exclude?, pattern components).
    rules: Vec<(bool, Vec<String>)>,
}

impl Ignore {
    /// Reads `<context>/.dockerignore` (none: nothing is ignored).
    pub fn read(context: &Path) -> Result<Ignore, ContextError> {
        match std::fs::read_to_string(context.join(".dockerignore")) {
            Ok(t) => Ok(Ignore::parse(&t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Ignore::default()),
            Err(e) => Err(other(context.join(".dockerignore").display(), e)),
        }
    }

    /// The patterns of a `.dockerignore` text.
    pub fn parse(text: &str) -> Ignore {
        let mut rules = Vec::new();
        for line in text.lines() {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let (exclude, pat) = match l.strip_prefix('!') {
                Some(p) => (false, p.trim()),
                None => (true, l),
            };
            let comps = clean(pat);
            if !comps.is_empty() {
                rules.push((exclude, comps));
            }
        }
        Ignore { rules }
    }

    /// True when `rel` (components relative to the context) is excluded.
    pub fn excluded(&self, rel: &[String]) -> bool {
        let mut out = false;
        for (exclude, pat) in &self.rules {
            // A pattern matching a directory matches what is under it.
            if (1..=rel.len()).any(|n| glob(pat, &rel[..n])) {
                out = *exclude;
            }
        }
        out
    }
}

/// Lexically cleaned components of a slash path: no empty, `.` or leading `/`; `..` pops
/// (and is kept when nothing is left to pop, so that escaping stays visible).
pub fn clean(path: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." if out.last().is_some_and(|l| l != "..") => {
                out.pop();
            }
            c => out.push(c.to_string()),
        }
    }
    out
}

/// Matches path components against pattern components (`**`, `*`, `?`).
pub fn glob(pat: &[String], path: &[String]) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((p, rest)) if p == "**" => (0..=path.len()).any(|skip| glob(rest, &path[skip..])),
        Some((p, rest)) => match path.split_first() {
            Some((c, more)) => component_match(p.as_bytes(), c.as_bytes()) && glob(rest, more),
            None => false,
        },
    }
}

fn component_match(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| component_match(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && component_match(rest, &s[1..]),
        Some((b'\\', rest)) if !rest.is_empty() => {
            s.first() == Some(&rest[0]) && component_match(&rest[1..], &s[1..])
        }
        Some((c, rest)) => s.first() == Some(c) && component_match(rest, &s[1..]),
    }
}

/// One thing to put in a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its path in the context.
    pub host: PathBuf,
    /// Its path in the image, relative to `/`.
    pub dest: String,
    /// What it is.
    pub kind: Kind,
    /// Permission bits (setuid and setgid dropped).
    pub mode: u32,
    /// Modification time (seconds).
    pub mtime: u64,
}

/// The kinds of entries a layer carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file of this many bytes.
    File(u64),
    /// A symbolic link to this target (kept as written).
    Link(String),
}

/// The files a `COPY`/`ADD` of `sources` (words already expanded) to `dest` (absolute, in
/// the image) takes from `context`, in order. `dest_is_dir` comes from Docker's rule: a
/// trailing `/`, or more than one source.
pub fn collect(
    context: &Path,
    ignore: &Ignore,
    sources: &[String],
    dest: &str,
) -> Result<Vec<Entry>, ContextError> {
    let root = context
        .canonicalize()
        .map_err(|e| other(context.display(), e))?;
    let dest_comps = clean(dest);
    let dest_dir = dest.ends_with('/') || sources.len() > 1;
    let mut out = Vec::new();
    for src in sources {
        let comps = clean(src);
        if comps.first().is_some_and(|c| c == "..") {
            return Err(ContextError::Outside {
                source_path: src.clone(),
            });
        }
        let matches = expand_source(&root, ignore, &comps, src)?;
        let many = matches.len() > 1 || dest_dir;
        for rel in matches {
            let host = root.join(rel.join("/"));
            // The source itself may be a link: it must resolve inside the context.
            let real = host.canonicalize().map_err(|_| ContextError::NotFound {
                source_path: src.clone(),
            })?;
            if !real.starts_with(&root) {
                return Err(ContextError::Outside {
                    source_path: src.clone(),
                });
            }
            let meta = std::fs::metadata(&real).map_err(|e| other(real.display(), e))?;
            if meta.is_dir() {
                // A directory's contents go into dest (the directory itself does not).
                walk(&root, ignore, &real, &dest_comps, &mut out)?;
            } else {
                let mut d = dest_comps.clone();
                if many {
                    d.push(rel.last().cloned().unwrap_or_default());
                }
                out.push(entry(&real, d.join("/"), &meta)?);
            }
        }
    }
    Ok(out)
}

/// The context paths a source names: itself, or what its wildcards match.
fn expand_source(
    root: &Path,
    ignore: &Ignore,
    comps: &[String],
    src: &str,
) -> Result<Vec<Vec<String>>, ContextError> {
    let wild = comps.iter().any(|c| c.contains(['*', '?']));
    let mut found = Vec::new();
    if !wild {
        if ignore.excluded(comps) && !comps.is_empty() {
            return Err(ContextError::NotFound {
                source_path: src.to_string(),
            });
        }
        if std::fs::symlink_metadata(root.join(comps.join("/"))).is_err() {
            return Err(ContextError::NotFound {
                source_path: src.to_string(),
            });
        }
        found.push(comps.to_vec());
    } else {
        let mut all = Vec::new();
        list(root, root, &mut Vec::new(), &mut all)?;
        for rel in all {
            if rel.len() == comps.len() && glob(comps, &rel) && !ignore.excluded(&rel) {
                found.push(rel);
            }
        }
        if found.is_empty() {
            return Err(ContextError::NotFound {
                source_path: src.to_string(),
            });
        }
    }
    Ok(found)
}

/// Every path under `dir` (relative to `root`), without following links.
fn list(
    root: &Path,
    dir: &Path,
    prefix: &mut Vec<String>,
    out: &mut Vec<Vec<String>>,
) -> Result<(), ContextError> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| other(dir.display(), e))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for n in names {
        prefix.push(n);
        out.push(prefix.clone());
        let p = root.join(prefix.join("/"));
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
            list(root, &p, prefix, out)?;
        }
        prefix.pop();
    }
    Ok(())
}

/// Adds what is under the directory `dir` (inside `root`) to `out`, below `dest`.
fn walk(
    root: &Path,
    ignore: &Ignore,
    dir: &Path,
    dest: &[String],
    out: &mut Vec<Entry>,
) -> Result<(), ContextError> {
    let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(dir)
        .map_err(|e| other(dir.display(), e))?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for name in names {
        let host = dir.join(&name);
        let rel: Vec<String> = host
            .strip_prefix(root)
            .unwrap_or(&host)
            .components()
            .filter_map(|c| match c {
                Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect();
        if ignore.excluded(&rel) {
            continue;
        }
        let meta = std::fs::symlink_metadata(&host).map_err(|e| other(host.display(), e))?;
        let mut d = dest.to_vec();
        d.push(name.to_string_lossy().into_owned());
        if meta.file_type().is_symlink() || meta.is_file() || meta.is_dir() {
            out.push(entry(&host, d.join("/"), &meta)?);
        }
        if meta.is_dir() {
            walk(root, ignore, &host, &d, out)?;
        }
    }
    Ok(())
}

fn entry(host: &Path, dest: String, meta: &std::fs::Metadata) -> Result<Entry, ContextError> {
    let kind = if meta.file_type().is_symlink() {
        let t = std::fs::read_link(host).map_err(|e| other(host.display(), e))?;
        Kind::Link(t.to_string_lossy().into_owned())
    } else if meta.is_dir() {
        Kind::Dir
    } else {
        Kind::File(meta.len())
    };
    Ok(Entry {
        host: host.to_path_buf(),
        dest,
        kind,
        mode: meta.permissions().mode() & 0o1777,
        mtime: meta.mtime().max(0) as u64,
    })
}

/// The digest of what `entries` hold (paths, kinds, modes, link targets, contents; not
/// times), for the layer cache.
pub fn digest(entries: &[Entry]) -> Result<String, ContextError> {
    let mut h = Sha256::new();
    for e in entries {
        h.update(format!("{}\0{:o}\0", e.dest, e.mode).as_bytes());
        match &e.kind {
            Kind::Dir => h.update(b"d\0"),
            Kind::Link(t) => h.update(format!("l\0{t}\0").as_bytes()),
            Kind::File(n) => {
                h.update(format!("f\0{n}\0").as_bytes());
                let mut f = File::open(&e.host).map_err(|err| other(e.host.display(), err))?;
                std::io::copy(&mut f, &mut h).map_err(|err| other(e.host.display(), err))?;
            }
        }
    }
    Ok(crate::digest::finish(h))
}

/// Writes `entries` as an uncompressed layer tarball at `path`, owned by `owner`; returns
/// its digest and size (its diff id is its digest).
pub fn write_tar(
    entries: &[Entry],
    owner: (u32, u32),
    path: &Path,
) -> Result<(String, u64), ContextError> {
    let file = File::create(path).map_err(|e| other(path.display(), e))?;
    let mut w = Hashing::new(std::io::BufWriter::new(file));
    {
        let mut b = tar::Builder::new(&mut w);
        // Later entries for the same path win in the image; keep the last only.
        let mut last: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, e) in entries.iter().enumerate() {
            last.insert(e.dest.as_str(), i);
        }
        for (i, e) in entries.iter().enumerate() {
            if last.get(e.dest.as_str()) != Some(&i) || e.dest.is_empty() {
                continue;
            }
            let mut h = tar::Header::new_ustar();
            h.set_uid(owner.0.into());
            h.set_gid(owner.1.into());
            h.set_mode(e.mode);
            h.set_mtime(e.mtime);
            let io = |err: std::io::Error| other(&e.dest, err);
            match &e.kind {
                Kind::Dir => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    b.append_data(&mut h, format!("{}/", e.dest), std::io::empty())
                        .map_err(io)?;
                }
                Kind::Link(t) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    b.append_link(&mut h, &e.dest, t).map_err(io)?;
                }
                Kind::File(n) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(*n);
                    let f = File::open(&e.host).map_err(|err| other(e.host.display(), err))?;
                    b.append_data(&mut h, &e.dest, f.take(*n)).map_err(io)?;
                }
            }
        }
        b.finish().map_err(|e| other(path.display(), e))?;
    }
    let (mut inner, digest, len) = w.finish();
    inner.flush().map_err(|e| other(path.display(), e))?;
    Ok((digest, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comps(s: &str) -> Vec<String> {
        clean(s)
    }

    #[test]
    fn dockerignore_last_match_wins_and_directories_cover_their_contents() {
        let ig = Ignore::parse("# comment\n*.log\nbuild\n!build/keep.txt\n**/secret*\n");
        let cases = [
            ("a.log", true),
            ("sub/a.log", false),
            ("build/x.o", true),
            ("build/keep.txt", false),
            ("deep/down/secret.key", true),
            ("main.rs", false),
        ];
        for (p, want) in cases {
            assert_eq!(ig.excluded(&comps(p)), want, "{p}");
        }
    }

    #[test]
    fn clean_keeps_escapes_visible() {
        assert_eq!(clean("/a/./b/../c"), vec!["a", "c"]);
        assert_eq!(clean("../x"), vec!["..", "x"]);
        assert_eq!(clean("a/../../x"), vec!["..", "x"]);
    }

    #[test]
    fn sources_outside_the_context_are_refused() {
        let outer = tempfile::tempdir().unwrap();
        let ctx = outer.path().join("ctx");
        std::fs::create_dir(&ctx).unwrap();
        std::fs::write(outer.path().join("secret"), "s").unwrap();
        std::os::unix::fs::symlink("../secret", ctx.join("link")).unwrap();
        std::os::unix::fs::symlink("/etc", ctx.join("etc")).unwrap();
        let ig = Ignore::default();
        for src in ["../secret", "a/../../secret", "link", "etc", "etc/passwd"] {
            let e = collect(&ctx, &ig, &[src.to_string()], "/x").unwrap_err();
            assert!(matches!(e, ContextError::Outside { .. }), "{src}: {e}");
        }
    }

    #[test]
    fn directories_copy_their_contents_and_links_stay_links() {
        let ctx = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(ctx.path().join("d/sub")).unwrap();
        std::fs::write(ctx.path().join("d/a"), "a").unwrap();
        std::fs::write(ctx.path().join("d/sub/b"), "bb").unwrap();
        std::fs::write(ctx.path().join("d/skip.log"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", ctx.path().join("d/l")).unwrap();
        let ig = Ignore::parse("d/*.log");
        let got = collect(ctx.path(), &ig, &["d".into()], "/app").unwrap();
        let names: Vec<(&str, &Kind)> = got.iter().map(|e| (e.dest.as_str(), &e.kind)).collect();
        assert_eq!(
            names,
            vec![
                ("app/a", &Kind::File(1)),
                ("app/l", &Kind::Link("/etc/passwd".into())),
                ("app/sub", &Kind::Dir),
                ("app/sub/b", &Kind::File(2)),
            ]
        );
        let one = collect(ctx.path(), &ig, &["d/a".into()], "/x/y").unwrap();
        assert_eq!(one[0].dest, "x/y");
        let into = collect(ctx.path(), &ig, &["d/a".into()], "/x/").unwrap();
        assert_eq!(into[0].dest, "x/a");
        assert!(matches!(
            collect(ctx.path(), &ig, &["d/skip.log".into()], "/x"),
            Err(ContextError::NotFound { .. })
        ));
        let d1 = digest(&got).unwrap();
        std::fs::write(ctx.path().join("d/a"), "A").unwrap();
        let again = collect(ctx.path(), &ig, &["d".into()], "/app").unwrap();
        assert_ne!(digest(&again).unwrap(), d1);
    }
}
