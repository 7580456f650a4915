//! cxl-lab's pipeline, one module a stage:
//! profiles are loaded ([`profile`]) into the typed model (`cxl-lab-model`), rendered into a QEMU
//! argv ([`render`]); artifacts come from the cache; VMs are spawned and controlled.
//! See `docs/ARCHITECTURE.md` for the map and the invariants.

pub mod apt;
pub mod atomic_file;
pub mod backing;
pub mod build;
pub mod cache;
pub mod debian;
pub mod host;
pub mod images;
pub mod lab;
pub mod lock;
pub mod paths;
pub mod prerequisites;
pub mod profile;
pub mod render;
pub mod runner;
pub mod secrets;
pub mod shell;
pub mod source;
pub mod stack;
pub mod vm;

pub use cxl_lab_model as model;
pub use paths::LabPaths;
pub use shell::Shell;
