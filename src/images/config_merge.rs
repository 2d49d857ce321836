//! An image's runtime config (ENTRYPOINT, CMD, ENV, WORKDIR, USER) merged with what the
//! caller gave, as Docker merges them, under stockade's rule that an image never grants
//! itself more than the policy does. Pure: [`merge`] takes the image config, the command
//! the caller gave and the policy with its overrides, and returns the policy to validate
//! (the image's contributions folded into its `[process]` section) and the command.
//!
//! `stockade run` and the Docker-API server call [`merge`], `stockade create` and
//! `stockade pool fill` [`merge_process`] (their commands come later); a pooled sandbox's
//! policy hash therefore covers the image's environment, working directory and user, so
//! a pool filled for one image config never serves a run that would get another.
//!
//! Which wins, field by field (the first that is set):
//! - **command**: `--entrypoint` replaces the image's ENTRYPOINT and drops its CMD; a
//!   command given (after `--`, Docker's `Cmd`) replaces CMD and keeps ENTRYPOINT. The
//!   command is ENTRYPOINT followed by CMD. Nothing at all is [`MergeError::NoCommand`].
//! - **environment**: stockade's defaults, then the image's ENV, then the policy's
//!   `process.env`, then `--env` (a later `K` replaces an earlier one). An image entry
//!   whose name stockade cannot carry (letters, digits and `_` only) is skipped with a
//!   warning.
//! - **working directory**: `-w` or the policy's `process.cwd`, else the image's WORKDIR,
//!   else the policy's default (`/workspace` when a workspace is mounted, else `/tmp`).
//!   A WORKDIR of `/workspace` (the workspace mount point, which the built-in images name)
//!   counts only when something is mounted there; otherwise it is an empty directory of
//!   the read-only image and the policy's default applies.
//! - **user**: `--user` or the policy's `process.user`, else the image's USER when it is
//!   numeric (`UID` or `UID:GID`) and neither ID is 0, else stockade's default sandbox
//!   user. An image USER of root or a user name is never granted: the sandbox runs as the
//!   default user and a warning says so (`--user` chooses explicitly).

use thiserror::Error;

use super::ImageConfig;
use crate::policy::{Policy, PolicyOverrides};

/// Where stockade mounts a sandbox's workspace.
pub const WORKSPACE_DIR: &str = "/workspace";

/// What the caller gave for the process, besides the policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requested {
    /// The command after `--` (Docker's `Cmd`); empty when none was given.
    pub command: Vec<String>,
    /// `--entrypoint` (Docker's `Entrypoint`): replaces the image's ENTRYPOINT and drops
    /// its CMD; `Some` of an empty list clears both. `None`: the image's.
    pub entrypoint: Option<Vec<String>>,
}

/// The policy to validate and the command to run, with the image's config merged in.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    /// The caller's policy with the image's environment, working directory and user folded
    /// into `[process]` where the caller left them to the image. Validate it with the same
    /// overrides that were given to [`merge`].
    pub policy: Policy,
    /// The command and its arguments. Empty only when the caller asked for none
    /// ([`merge_process`]).
    pub argv: Vec<String>,
    /// What the image asked for and did not get, one line each.
    pub warnings: Vec<String>,
}

/// Why an image's config and a request make no process.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MergeError {
    /// Neither the caller nor the image named a command.
    #[error("no command: give one after -- or use an image with CMD/ENTRYPOINT")]
    NoCommand,
    /// The image's WORKDIR is not a path a sandbox can start in.
    #[error("image `{image}`: WorkingDir `{dir}` must be an absolute path without `..`")]
    WorkingDir {
        /// The image's name.
        image: String,
        /// Its WORKDIR.
        dir: String,
    },
}

/// The image's config merged with `requested`, `policy` and `overrides` (see the module
/// docs for which wins). `image_name` names the image in errors and warnings.
pub fn merge(
    image_name: &str,
    image: &ImageConfig,
    requested: &Requested,
    policy: &Policy,
    overrides: &PolicyOverrides,
) -> Result<Merged, MergeError> {
    let argv = command(image, requested);
    if argv.first().is_none_or(String::is_empty) {
        return Err(MergeError::NoCommand);
    }
    let mut m = merge_process(image_name, image, policy, overrides)?;
    m.argv = argv;
    Ok(m)
}

/// [`merge`] for a sandbox that is given its commands later (`stockade create`, a pool):
/// the image's environment, working directory and user, and no command.
pub fn merge_process(
    image_name: &str,
    image: &ImageConfig,
    policy: &Policy,
    overrides: &PolicyOverrides,
) -> Result<Merged, MergeError> {
    let mut out = policy.clone();
    let mut warnings = Vec::new();

    let mut env: Vec<String> = Vec::with_capacity(image.env.len());
    for kv in &image.env {
        if carried(kv) {
            env.push(kv.clone());
        } else {
            warnings.push(format!(
                "image `{image_name}`: ENV `{}` skipped: variable names are letters, digits and `_`",
                kv.escape_debug()
            ));
        }
    }
    if !env.is_empty() {
        env.extend(out.process.env.take().unwrap_or_default());
        out.process.env = Some(env);
    }

    let explicit_cwd = overrides.cwd.is_some() || policy.process.cwd.is_some();
    let dir = image.working_dir.trim_end_matches('/');
    if !explicit_cwd && !image.working_dir.is_empty() {
        let dir = if dir.is_empty() { "/" } else { dir };
        if !dir.starts_with('/') || dir.split('/').any(|c| c == "..") {
            return Err(MergeError::WorkingDir {
                image: image_name.to_string(),
                dir: image.working_dir.clone(),
            });
        }
        if dir != WORKSPACE_DIR || workspace_mounted(policy, overrides) {
            out.process.cwd = Some(dir.to_string());
        }
    }

    let explicit_user = overrides.user.is_some() || policy.process.user.is_some();
    if !explicit_user && !image.user.is_empty() {
        if unprivileged_numeric(&image.user) {
            out.process.user = Some(image.user.clone());
        } else {
            warnings.push(format!(
                "image `{image_name}`: USER `{}` not granted (only a numeric UID[:GID] other than 0 is); running as the default sandbox user, choose one with --user",
                image.user.escape_debug()
            ));
        }
    }
    Ok(Merged {
        policy: out,
        argv: Vec::new(),
        warnings,
    })
}

/// ENTRYPOINT then CMD, as the request replaces them.
fn command(image: &ImageConfig, requested: &Requested) -> Vec<String> {
    let (entry, default_cmd): (&[String], &[String]) = match &requested.entrypoint {
        Some(e) => (e, &[]),
        None => (&image.entrypoint, &image.cmd),
    };
    let cmd = if requested.command.is_empty() {
        default_cmd
    } else {
        &requested.command
    };
    entry
        .iter()
        .filter(|s| requested.entrypoint.is_none() || !s.is_empty())
        .chain(cmd)
        .cloned()
        .collect()
}

/// A `K=V` entry whose name the policy's environment accepts.
fn carried(kv: &str) -> bool {
    kv.split_once('=').is_some_and(|(k, _)| {
        !k.is_empty()
            && !kv.contains('\0')
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// `UID` or `UID:GID`, decimal, neither 0 nor `(uid_t)-1`.
fn unprivileged_numeric(user: &str) -> bool {
    let id = |s: &str| {
        !s.is_empty()
            && s.bytes().all(|b| b.is_ascii_digit())
            && s.parse::<u32>().is_ok_and(|n| n != 0 && n != u32::MAX)
    };
    match user.split_once(':') {
        Some((u, g)) => id(u) && id(g),
        None => id(user),
    }
}

/// Whether the policy mounts anything at [`WORKSPACE_DIR`]: a workspace (host or managed),
/// a bind or a tmpfs.
fn workspace_mounted(policy: &Policy, overrides: &PolicyOverrides) -> bool {
    let at = |d: &str| d.trim_end_matches('/') == WORKSPACE_DIR;
    let fs = &policy.filesystem;
    overrides.workspace.is_some()
        || overrides.workspace_size.is_some()
        || fs.workspace.is_some()
        || fs.workspace_size.is_some()
        || fs
            .mounts
            .iter()
            .chain(&overrides.mounts)
            .any(|m| at(&m.destination))
        || fs
            .tmpfs
            .iter()
            .chain(&overrides.tmpfs)
            .any(|m| at(&m.destination))
}

#[cfg(test)]
mod tests;
