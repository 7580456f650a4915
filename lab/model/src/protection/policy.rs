//! A sharing policy as the protection models see it: requesters (each behind a CXL port),
//! buffers placed in one device's address space, and grants (direct or delegated) that can be
//! revoked. The ground truth every mechanism is measured against.

pub use cxl_lab_cap::{AccessKind, Rights};

use super::intervals::Intervals;

/// Who issues accesses: a VM, a process, an accelerator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requester {
    pub name: String,
    /// The CXL port its accesses arrive from (its host or its own endpoint): what CXL's own
    /// mechanisms can tell apart (a head, an SPID). Requesters on one host share it.
    pub port: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Buffer {
    pub name: String,
    /// Device address of the first byte.
    pub base: u64,
    pub size: u64,
}

/// Requester `requester` may access `buffer` with `rights`, given directly or by `delegated_by`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub requester: usize,
    pub buffer: usize,
    pub rights: Rights,
    /// The grant this one was delegated from (its holder handed it on).
    pub delegated_by: Option<usize>,
    /// Whether the policy lets this grant's holder hand it on.
    pub may_delegate: bool,
}

/// The policy's state: every grant ever made, and which are in force.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    pub requesters: Vec<Requester>,
    pub buffers: Vec<Buffer>,
    pub grants: Vec<Grant>,
    active: Vec<bool>,
}

impl Policy {
    pub fn new(requesters: Vec<Requester>, buffers: Vec<Buffer>) -> Policy {
        Policy { requesters, buffers, grants: Vec::new(), active: Vec::new() }
    }

    /// Adds a grant in force; returns its index.
    pub fn add_grant(&mut self, grant: Grant) -> usize {
        self.grants.push(grant);
        self.active.push(true);
        self.grants.len() - 1
    }

    /// Revokes a grant and every grant delegated from it, transitively; returns them all.
    pub fn revoke(&mut self, grant: usize) -> Vec<usize> {
        let mut revoked = vec![grant];
        let mut index = 0;
        while index < revoked.len() {
            let parent = revoked[index];
            let children = (0..self.grants.len()).filter(|&child| self.grants[child].delegated_by == Some(parent));
            revoked.extend(children.collect::<Vec<_>>());
            index += 1;
        }
        for &gone in &revoked {
            self.active[gone] = false;
        }
        revoked
    }

    pub fn is_active(&self, grant: usize) -> bool {
        self.active[grant]
    }

    /// Grants in force, with their indices.
    pub fn active_grants(&self) -> impl Iterator<Item = (usize, &Grant)> {
        self.grants.iter().enumerate().filter(|(index, _)| self.active[*index])
    }

    /// The device range `[start, end)` of a grant's buffer.
    pub fn span(&self, grant: &Grant) -> (u64, u64) {
        let buffer = &self.buffers[grant.buffer];
        (buffer.base, buffer.base + buffer.size)
    }

    /// What the policy lets `requester` reach with `access`.
    pub fn allowed(&self, requester: usize, access: AccessKind) -> Intervals {
        let granted = self
            .active_grants()
            .filter(|(_, grant)| grant.requester == requester && grant.rights.allows(access))
            .map(|(_, grant)| self.span(grant));
        Intervals::from_ranges(granted)
    }

    /// Whether the policy allows the access: the ground truth.
    pub fn allows(&self, requester: usize, address: u64, length: u64, access: AccessKind) -> bool {
        let end = address.saturating_add(length);
        self.active_grants().any(|(_, grant)| {
            let (start, grant_end) = self.span(grant);
            grant.requester == requester && grant.rights.allows(access) && start <= address && end <= grant_end
        })
    }

    /// Requesters behind `port`.
    pub fn requesters_on(&self, port: &str) -> impl Iterator<Item = usize> + '_ {
        let port = port.to_owned();
        self.requesters.iter().enumerate().filter(move |(_, requester)| requester.port == port).map(|(index, _)| index)
    }

    /// Distinct ports, in first-seen order.
    pub fn ports(&self) -> Vec<&str> {
        let mut ports: Vec<&str> = Vec::new();
        for requester in &self.requesters {
            if !ports.contains(&requester.port.as_str()) {
                ports.push(&requester.port);
            }
        }
        ports
    }
}
