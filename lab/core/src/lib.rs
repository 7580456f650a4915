//! cxl-lab's pipeline, one folder a stage (see `docs/ARCHITECTURE.md` for the map and the
//! invariants):
//! - [`profile`] loads profiles into the typed model (`cxl-lab-model`), [`scenario`] sharing
//!   scenarios;
//! - [`render`] turns a topology into each host's QEMU argv, for the QEMU in use ([`qemu`]);
//! - [`stack`] resolves, downloads, builds and caches what a lab boots (QEMU, kernel, root);
//! - [`vm`] runs machines (QEMU, QMP, guest agent), knowing nothing of profiles or labs;
//! - [`capability`] the capability service a capability-checked device asks (one per
//!   `capabilities: true` backend, started by the lab's supervisor);
//! - [`lab`] is the commands users type, on top of all of them;
//! - [`suite`] runs suites against a lab and reports their results (JUnit, JSON);
//! - [`matrix`] runs suites over many profiles and stacks in parallel, with an HTML report.
//!
//! Below them: [`layout`] (where every file lives), [`sys`] (running programs, processes,
//! atomic writes), [`yaml`] (YAML error messages) and [`shell`] (all output).

pub mod capability;
pub mod lab;
pub mod layout;
pub mod matrix;
pub mod prerequisites;
pub mod profile;
pub mod qemu;
pub mod render;
pub mod scenario;
pub mod shell;
pub mod stack;
pub mod suite;
pub mod sys;
pub mod vm;
pub mod yaml;

pub use cxl_lab_model as model;
pub use layout::Layout;
pub use shell::Shell;
