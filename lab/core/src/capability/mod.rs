//! The capability service of a `capabilities: true` memory backend (`docs/capability-lab.md`):
//! the host side of the lab's capability-checking CXL device.
//!
//! - `service.rs` the service: the root secret, verification and grants through `lab/cap`, the
//!   devices' and the owner's sockets;
//! - `table.rs` the grant table it publishes for the devices (a seqlock-guarded file they map
//!   read-only) and the lookup the devices do in it;
//! - `owner.rs` what the lab's owner asks it (`lab cap mint|revoke|grants`).
//!
//! It runs no machine and knows nothing of labs: the supervisor starts one per backend.

pub mod owner;
pub mod service;
pub mod table;

pub use service::{RunningService, ServiceConfig};
