//! Running machines: the QEMU supervisor, the QMP and guest agent clients, and the accelerator
//! choice. Nothing here knows about profiles or labs; it takes a rendered argv and a run directory.

pub mod accel;
pub mod agent;
pub mod backing;
pub mod disks;
pub mod machine;
pub mod qmp;
pub mod supervisor;
