//! stockade: run untrusted code in locked-down Linux containers through containerd.
//!
//! The pure core turns a [`policy::Policy`] into an OCI runtime [`Spec`](oci_spec::runtime::Spec)
//! ([`spec::build`]) and audits specs ([`audit`]); the edges talk to containerd
//! ([`containerd`]), build images ([`images`]), run sandboxes ([`runner`]) and copy files
//! into and out of them ([`files`]).

// `serde_json::json!` of the Docker API's larger documents.
#![recursion_limit = "256"]

pub mod apparmor;
pub mod audit;
#[cfg(feature = "bench")]
pub mod bench;
pub mod bind;
pub mod containerd;
pub mod digest;
pub mod disk;
pub mod files;
pub mod host;
pub mod idmap;
pub mod ids;
pub mod images;
pub mod init;
pub mod k8s;
pub mod network;
pub mod policy;
pub mod pool;
pub mod procfs;
pub mod rfc3339;
pub mod runner;
pub mod sandbox;
pub mod seccomp;
pub mod serve;
pub mod spec;

pub use oci_spec;
