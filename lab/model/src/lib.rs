//! The CXL topology model shared by every stage of cxl-lab.
//!
//! A profile (YAML, `docs/profiles.md`) is parsed with source locations ([`schema`]), validated
//! once against QEMU's rules ([`validate`]) into the typed graph ([`topology`]), from which the
//! renderer builds QEMU's argv and [`expect`] predicts what Linux will show.
//!
//! This crate never touches the file system or spawns a process: it maps text to values.

pub mod decode;
pub mod error;
pub mod expect;
pub mod protection;
pub mod scenario;
pub mod schema;
pub mod size;
pub mod topology;
pub mod validate;

pub use error::{ProfileError, ProfileErrors};
pub use size::ByteSize;
pub use topology::*;
pub use validate::parse_profile;
