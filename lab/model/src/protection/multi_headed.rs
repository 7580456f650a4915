//! A multi-headed device: each head (a host's link) sees the regions the fabric manager gives
//! it, at most 16, each decoded by the host in 256 MiB units. The requester's port is its host.

use super::policy::Policy;
use super::port_table::{PortLimits, PortMechanism};
use super::Actor;
use crate::decode::DECODER_UNIT;

/// At most 16 regions per head (CXL 3.0 §2.5, multi-headed devices, as the capability article
/// cites it); the host decodes each in HDM decoder units of 256 MiB (CXL 3.1 §8.2.4.20.5).
pub const LIMITS: PortLimits = PortLimits {
    entry: "region",
    max_entries: 16,
    max_entries_cite: "CXL 3.0 §2.5: at most 16 regions per head",
    unit: DECODER_UNIT,
    unit_cite: "CXL 3.1 §8.2.4.20.5: HDM decoders in 256 MiB units",
    programmer: Actor::FabricManager,
};

pub fn mechanism(policy: &Policy) -> PortMechanism {
    PortMechanism::new("multi-headed", LIMITS, policy)
}
