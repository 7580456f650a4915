//! Protection models: how well each mechanism expresses a sharing policy over one CXL memory
//! device. Each answers [`Mechanism::check`] for one access and says how many table entries it
//! needs; the CXL mechanisms cite the spec section of each limit where it is defined.
//!
//! - [`host_decode`]: host-managed decode only (what a host maps, all of it can touch);
//! - [`multi_headed`]: a multi-headed device, at most 16 regions per head;
//! - [`gfam`]: a fabric-attached memory device, at most 8 translation ranges per requester SPID,
//!   memory groups of at least 64 MiB;
//! - [`capability`]: capabilities through `lab/cap` (mint, attenuate, verify, installed grants).

pub mod capability;
pub mod gfam;
pub mod host_decode;
pub mod intervals;
pub mod multi_headed;
pub mod policy;
pub mod port_table;

use intervals::Intervals;
use policy::{AccessKind, Policy};

/// One access's fate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny(String),
}

impl Verdict {
    pub fn allowed(&self) -> bool {
        matches!(self, Verdict::Allow)
    }
}

/// Who had to act to give a grant (or a revocation) effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Actor {
    /// The holder itself, without asking anyone (attenuating a capability it holds).
    Holder,
    /// The memory device (minting a capability).
    Device,
    /// The host's kernel programming its own HDM decoders.
    Host,
    /// The fabric manager reprogramming the device's tables.
    FabricManager,
}

/// What giving a grant effect cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Installed {
    /// The mechanism grants exactly the policy (no widening to its unit or entry limit).
    pub exact: bool,
    pub by: Actor,
}

/// A protection mechanism configured from a [`Policy`] as it changes.
pub trait Mechanism {
    fn name(&self) -> &'static str;
    /// Gives grant `grant` of `policy` (already added) effect.
    fn grant(&mut self, policy: &Policy, grant: usize) -> Installed;
    /// Takes the grants `revoked` (already revoked in `policy`) away; returns who acted for each
    /// change the mechanism made.
    fn revoke(&mut self, policy: &Policy, revoked: &[usize]) -> Vec<Actor>;
    fn check(&self, requester: usize, address: u64, length: u64, access: AccessKind) -> Verdict;
    /// Entries of the mechanism's tables in use (decoders, regions, ranges, installed grants).
    fn table_entries(&self) -> usize;
    /// Everything `requester` can reach with `access`.
    fn reachable(&self, requester: usize, access: AccessKind) -> Intervals;
}

#[cfg(test)]
mod tests;
