//! A fabric-attached memory device (GFAM, a G-FAM device): the fabric manager gives each
//! requester (its SPID) translation ranges, at most 8, and access is by memory groups of at
//! least 64 MiB, so ranges start and end on 64 MiB boundaries. The requester's port is its SPID:
//! VMs behind one host share it.
//!
//! Memory groups can also hide blocks inside a range (§7.7.2.5); that hole punching is not
//! modelled, so a cover merged down to 8 ranges keeps its gaps visible.

use super::policy::Policy;
use super::port_table::{PortLimits, PortMechanism};
use super::Actor;
use crate::size::MIB;

/// The smallest memory group (CXL 3.0 Table 7-67, minimum block size).
pub const MEMORY_GROUP: u64 = 64 * MIB;

/// 8 translation ranges per SPID (CXL 3.0 §7.7.2.4), 64 MiB memory groups (§7.7.2.5,
/// Table 7-67).
pub const LIMITS: PortLimits = PortLimits {
    entry: "translation range",
    max_entries: 8,
    max_entries_cite: "CXL 3.0 §7.7.2.4: at most 8 translation ranges per SPID",
    unit: MEMORY_GROUP,
    unit_cite: "CXL 3.0 §7.7.2.5, Table 7-67: memory groups of at least 64 MiB",
    programmer: Actor::FabricManager,
};

pub fn mechanism(policy: &Policy) -> PortMechanism {
    PortMechanism::new("GFAM", LIMITS, policy)
}
