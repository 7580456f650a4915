//! The shape CXL's own protection shares: one table per port (a host's head, a requester's SPID),
//! each entry a range of at least the hardware's unit, a fixed number of entries per port, no
//! read/write distinction. What a port's table covers, every requester behind the port reaches.

use std::collections::BTreeMap;

use super::intervals::Intervals;
use super::policy::{AccessKind, Policy};
use super::{Actor, Installed, Verdict};
use crate::size::ByteSize;

/// One mechanism's hardware limits, each with the spec section that sets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortLimits {
    /// What an entry is called: "HDM decoder", "region", "translation range".
    pub entry: &'static str,
    pub max_entries: usize,
    pub max_entries_cite: &'static str,
    /// Entries start and end on multiples of this.
    pub unit: u64,
    pub unit_cite: &'static str,
    /// Who programs the tables.
    pub programmer: Actor,
}

/// What the hardware cannot hold.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Inexpressible {
    #[error("port `{port}` needs {needed} {entry}s, the hardware holds {max} ({cite})")]
    TooManyEntries { port: String, entry: &'static str, needed: usize, max: usize, cite: &'static str },
    #[error("[{start:#x}, {end:#x}) is not on {unit} boundaries ({cite})", unit = ByteSize(*.unit))]
    OffUnit { start: u64, end: u64, unit: u64, cite: &'static str },
}

/// Each port's programmed ranges.
#[derive(Clone, Debug)]
pub struct PortTable {
    pub limits: PortLimits,
    ranges: BTreeMap<String, Intervals>,
}

impl PortTable {
    pub fn new(limits: PortLimits) -> PortTable {
        PortTable { limits, ranges: BTreeMap::new() }
    }

    /// Programs exactly `wanted` for `port`, or refuses as the hardware would.
    pub fn program_exact(&mut self, port: &str, wanted: &Intervals) -> Result<(), Inexpressible> {
        let unit = self.limits.unit;
        if let Some(&(start, end)) = wanted.ranges().iter().find(|(start, end)| start % unit != 0 || end % unit != 0) {
            return Err(Inexpressible::OffUnit { start, end, unit, cite: self.limits.unit_cite });
        }
        if wanted.len() > self.limits.max_entries {
            return Err(Inexpressible::TooManyEntries {
                port: port.to_owned(),
                entry: self.limits.entry,
                needed: wanted.len(),
                max: self.limits.max_entries,
                cite: self.limits.max_entries_cite,
            });
        }
        self.ranges.insert(port.to_owned(), wanted.clone());
        Ok(())
    }

    /// Programs the smallest cover of `wanted` the hardware holds: rounded out to the unit, the
    /// closest ranges merged down to the entry limit. Returns whether that cover is exactly
    /// `wanted`.
    pub fn program_cover(&mut self, port: &str, wanted: &Intervals) -> bool {
        let cover = wanted.rounded_out(self.limits.unit).coarsened_to(self.limits.max_entries);
        let exact = cover == *wanted;
        self.ranges.insert(port.to_owned(), cover);
        exact
    }

    /// Reprograms `port` from every grant in force of every requester behind it.
    pub fn reprogram(&mut self, policy: &Policy, port: &str) -> Installed {
        let behind: Vec<usize> = policy.requesters_on(port).collect();
        let spans = policy.active_grants().filter(|(_, grant)| behind.contains(&grant.requester)).map(|(_, grant)| policy.span(grant));
        let exact = self.program_cover(port, &Intervals::from_ranges(spans));
        Installed { exact, by: self.limits.programmer }
    }

    pub fn reached(&self, port: &str) -> Intervals {
        self.ranges.get(port).cloned().unwrap_or_default()
    }

    pub fn check(&self, port: &str, address: u64, length: u64, _access: AccessKind) -> Verdict {
        if self.ranges.get(port).is_some_and(|ranges| ranges.contains_span(address, length)) {
            Verdict::Allow
        } else {
            Verdict::Deny(format!("no {} of port `{port}` covers {length:#x} bytes at {address:#x}", self.limits.entry))
        }
    }

    pub fn entries(&self) -> usize {
        self.ranges.values().map(Intervals::len).sum()
    }
}

/// The [`super::Mechanism`] of a port-table mechanism: every grant or revocation reprograms the
/// tables of the ports it touches.
#[derive(Clone, Debug)]
pub struct PortMechanism {
    pub name: &'static str,
    pub table: PortTable,
    /// Each requester's port, by requester index.
    ports: Vec<String>,
}

impl PortMechanism {
    pub fn new(name: &'static str, limits: PortLimits, policy: &Policy) -> PortMechanism {
        let ports = policy.requesters.iter().map(|requester| requester.port.clone()).collect();
        PortMechanism { name, table: PortTable::new(limits), ports }
    }
}

impl super::Mechanism for PortMechanism {
    fn name(&self) -> &'static str {
        self.name
    }

    fn grant(&mut self, policy: &Policy, grant: usize) -> Installed {
        let port = self.ports[policy.grants[grant].requester].clone();
        self.table.reprogram(policy, &port)
    }

    fn revoke(&mut self, policy: &Policy, revoked: &[usize]) -> Vec<Actor> {
        let mut ports: Vec<String> = revoked.iter().map(|&grant| self.ports[policy.grants[grant].requester].clone()).collect();
        ports.sort();
        ports.dedup();
        ports.iter().map(|port| self.table.reprogram(policy, port).by).collect()
    }

    fn check(&self, requester: usize, address: u64, length: u64, access: AccessKind) -> Verdict {
        self.table.check(&self.ports[requester], address, length, access)
    }

    fn table_entries(&self) -> usize {
        self.table.entries()
    }

    fn reachable(&self, requester: usize, _access: AccessKind) -> Intervals {
        self.table.reached(&self.ports[requester])
    }
}
