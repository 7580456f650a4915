//! Host-managed decode only: a host programs its HDM decoders over the device and everything it
//! maps, every requester on the host (each VM, each process) can touch, read or write. The
//! requester's port is its host.

use super::policy::Policy;
use super::port_table::{PortLimits, PortMechanism};
use super::Actor;
use crate::decode::DECODER_UNIT;

/// An HDM decoder's base and size are multiples of 256 MiB (CXL 3.1 §8.2.4.20.5, §8.2.4.20.6:
/// only bits 31:28 of the low registers are defined) and a component has at most 32 decoders
/// (CXL 3.1 §8.2.4.20.1, Decoder Count).
pub const LIMITS: PortLimits = PortLimits {
    entry: "HDM decoder",
    max_entries: 32,
    max_entries_cite: "CXL 3.1 §8.2.4.20.1, Decoder Count: at most 32",
    unit: DECODER_UNIT,
    unit_cite: "CXL 3.1 §8.2.4.20.5-6: decoder base and size in 256 MiB units",
    programmer: Actor::Host,
};

pub fn mechanism(policy: &Policy) -> PortMechanism {
    PortMechanism::new("host decode", LIMITS, policy)
}
