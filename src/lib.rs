//! stockade: run untrusted code in locked-down Linux containers through containerd.
//!
//! The pure core turns a [`policy::Policy`] into an OCI runtime [`Spec`](oci_spec::runtime::Spec)
//! ([`spec::build`]) and audits specs ([`audit`]); the edges talk to containerd
//! ([`containerd`]), build images ([`images`]) and run sandboxes ([`runner`]).

pub mod apparmor;
pub mod audit;
pub mod bench;
pub mod bind;
pub mod containerd;
pub mod host;
pub mod idmap;
pub mod images;
pub mod init;
pub mod policy;
pub mod pool;
pub mod procfs;
pub mod runner;
pub mod seccomp;
pub mod spec;

pub use oci_spec;
