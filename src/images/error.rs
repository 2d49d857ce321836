//! [`ImageError`]: what goes wrong building, importing, pulling, finding or removing
//! images, each variant one line naming the image, archive, file or digest at fault.

use std::path::PathBuf;

use thiserror::Error;

use super::{layer, registry, ReferenceError, SNAPSHOTTER};
use crate::containerd::ContainerdError;

/// Errors building, importing, finding or removing images.
#[derive(Debug, Error)]
pub enum ImageError {
    /// No image of that name in the namespace.
    #[error("image `{name}` not found in namespace {namespace} ({hint})")]
    NotFound {
        /// The name as the caller gave it.
        name: String,
        /// The containerd namespace searched.
        namespace: String,
        /// How to get the image: the recipe build, pull or import to run.
        hint: String,
    },
    /// The image record exists but its snapshot is missing or not committed.
    #[error("image `{name}` has no committed {SNAPSHOTTER} snapshot {chain_id} (re-import it with `stockade image import` or rebuild it)")]
    NotUnpacked {
        /// The image's canonical name.
        name: String,
        /// The chain id of its top layer: the snapshot that should exist.
        chain_id: String,
    },
    /// The name does not parse as an image reference.
    #[error(transparent)]
    BadName(#[from] ReferenceError),
    /// A name under the built-in repository, which only recipe builds write.
    #[error("image name `{name}` is reserved for stockade's built-in images (made by `stockade image build`); {hint}")]
    Reserved {
        /// The refused name, familiar form (`stockade/busybox:latest`).
        name: String,
        /// What to do instead (choose another name, and with which flag; or which recipe
        /// builds this one).
        hint: String,
    },
    /// `stockade image build` named a recipe that `rootfs/` does not have.
    #[error("no recipe `{name}` (known: {known})")]
    UnknownRecipe {
        /// The recipe asked for.
        name: String,
        /// The recipes there are, comma-separated.
        known: String,
    },
    /// A recipe's TOML does not parse, or its build script failed.
    #[error("recipe {name}: {reason}")]
    Recipe {
        /// The recipe's name.
        name: String,
        /// What went wrong, naming the recipe's file or the script's exit status and log.
        reason: String,
    },
    /// An image archive as a whole is refused (not a known format, no image for this
    /// platform, layers and diff ids that disagree, no name where one is needed).
    #[error("{path}: {reason}")]
    Archive {
        /// The archive file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// One entry of an archive (or a path one of its documents names) is refused.
    #[error("{path}: entry `{entry}`: {reason}")]
    ArchiveEntry {
        /// The archive file.
        path: PathBuf,
        /// The entry's path inside the archive.
        entry: String,
        /// Why it is refused.
        reason: String,
    },
    /// A document or record is malformed or inconsistent (a manifest, a config, an image
    /// record without a target), or a worker task failed.
    #[error("{what}: {reason}")]
    Invalid {
        /// The thing at fault (`image `NAME``, `manifest DIGEST`, `layer writer`).
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Bytes whose digest (or size) is not the one their descriptor promised.
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The blob or layer checked.
        what: String,
        /// The digest (and size, where checked) it should have.
        expected: String,
        /// The digest (and size) it has, or containerd's message when containerd checked.
        actual: String,
    },
    /// A host file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Packing or applying a layer failed.
    #[error(transparent)]
    Layer(#[from] layer::LayerError),
    /// A containerd call failed.
    #[error(transparent)]
    Containerd(#[from] ContainerdError),
    /// A registry pull or push failed.
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
}
