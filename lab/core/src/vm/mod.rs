//! Running machines: the QEMU supervisor and the machine type for a QEMU known by pid, their disks
//! and memory backend files, the QMP and guest agent clients, the accelerator choice, and what a
//! QEMU's devices take. Nothing here knows about profiles or labs; it takes a rendered argv, a run
//! directory and file paths.

pub mod accel;
pub mod agent;
pub mod backing;
pub mod device_help;
pub mod disks;
pub mod error;
pub mod machine;
pub mod qmp;
pub mod snapshot;
pub mod supervisor;
