//! Capabilities through `lab/cap` itself: the device mints a token per direct grant, a holder
//! attenuates its token to delegate (no one else acts), each requester installs its tokens once
//! and every access is a lookup in the device's installed-grant table.
//!
//! Revoking a token kills it and every descendant (they share its id, `docs/capability-format.md`),
//! so revoking a delegated grant also kills the delegator's: the device mints the delegator a
//! fresh token, and that is counted as the device acting.

use cxl_lab_cap::{
    AccessRequest, AddressRange, Caveat, Device, DeviceConfig, DeviceId, InstalledGrant, Policy as CapPolicy,
    RequesterId, RootSecret, Timestamp, Token,
};

use super::intervals::Intervals;
use super::policy::{AccessKind, Policy};
use super::{Actor, Installed, Mechanism, Verdict};

/// The device clock every access of a scenario arrives at: nothing in a scenario expires.
const NOW: Timestamp = Timestamp::from_millis(1_760_000_000_000);

pub struct Capabilities {
    device: Device,
    /// Each policy grant's token, as its requester holds and installed it.
    held: Vec<Option<Held>>,
}

struct Held {
    token: Token,
    installed: InstalledGrant,
    requester: usize,
}

impl Capabilities {
    /// A device as large as the policy's buffers whose installed-grant table holds
    /// `grants_per_requester` grants per requester (the device's default is GFAM's 8; a
    /// scenario sizes it for its busiest requester).
    pub fn new(policy: &Policy, grants_per_requester: usize) -> Capabilities {
        let capacity = policy.buffers.iter().map(|buffer| buffer.base + buffer.size).max().unwrap_or(1).max(1);
        let mut config = DeviceConfig::new(DeviceId(1), capacity);
        config.policy = CapPolicy { max_grants_per_requester: grants_per_requester.max(1), ..CapPolicy::default() };
        // A fixed secret: the model measures the mechanism, it protects nothing.
        let device = Device::new(config, RootSecret::from_bytes([0x5a; 32])).expect("a non-empty device with a valid policy");
        Capabilities { device, held: Vec::new() }
    }

    /// The caveats of a grant: its buffer, its rights, and its requester as the only holder
    /// unless the policy lets it hand the grant on.
    fn caveats(policy: &Policy, grant: usize) -> Vec<Caveat> {
        let granted = &policy.grants[grant];
        let buffer = &policy.buffers[granted.buffer];
        let range = AddressRange::new(buffer.base, buffer.size).expect("a buffer inside the device");
        let mut caveats = vec![Caveat::Range(range), Caveat::Rights(granted.rights)];
        if !granted.may_delegate {
            caveats.push(Caveat::Holder(requester_id(granted.requester)));
        }
        caveats
    }

    fn mint_and_install(&mut self, policy: &Policy, grant: usize) -> Installed {
        let token = self.device.mint(&Capabilities::caveats(policy, grant)).expect("caveats the device accepts");
        self.install(policy, grant, token, Actor::Device)
    }

    fn install(&mut self, policy: &Policy, grant: usize, token: Token, by: Actor) -> Installed {
        let requester = policy.grants[grant].requester;
        let installed = self.device.install_grant(token.as_bytes(), requester_id(requester), NOW);
        if self.held.len() <= grant {
            self.held.resize_with(grant + 1, || None);
        }
        let exact = installed.is_ok();
        self.held[grant] = installed.ok().map(|installed| Held { token, installed, requester });
        Installed { exact, by }
    }
}

fn requester_id(requester: usize) -> RequesterId {
    RequesterId(u16::try_from(requester).expect("at most 65,536 requesters, as CXL's 16-bit ids"))
}

impl Mechanism for Capabilities {
    fn name(&self) -> &'static str {
        "capabilities"
    }

    fn grant(&mut self, policy: &Policy, grant: usize) -> Installed {
        let parent_token = policy.grants[grant].delegated_by.and_then(|parent| self.held.get(parent)?.as_ref().map(|held| &held.token));
        let Some(parent_token) = parent_token else { return self.mint_and_install(policy, grant) };
        match parent_token.attenuate_all(&Capabilities::caveats(policy, grant)) {
            Ok(token) => self.install(policy, grant, token, Actor::Holder),
            Err(_) => Installed { exact: false, by: Actor::Holder },
        }
    }

    fn revoke(&mut self, policy: &Policy, revoked: &[usize]) -> Vec<Actor> {
        let mut actors = Vec::new();
        for &grant in revoked {
            let Some(gone) = self.held.get_mut(grant).and_then(Option::take) else { continue };
            let token_id = gone.installed.token_id;
            // Only the device revokes: it adds the id to its current epoch's deny set.
            self.device.revoke_token(gone.token.identifier().epoch, token_id).expect("a token of the device's one epoch");
            actors.push(Actor::Device);
            // The family's grants still in force lost their token too: the device mints anew.
            let family: Vec<usize> = (0..self.held.len())
                .filter(|&other| self.held[other].as_ref().is_some_and(|held| held.installed.token_id == token_id))
                .collect();
            for other in family {
                self.held[other] = None;
                if policy.is_active(other) {
                    actors.push(self.mint_and_install(policy, other).by);
                }
            }
        }
        actors
    }

    fn check(&self, requester: usize, address: u64, length: u64, access: AccessKind) -> Verdict {
        let request = AccessRequest { requester: requester_id(requester), address, length, access, now: NOW };
        match self.device.check_access(&request) {
            Ok(_) => Verdict::Allow,
            Err(denied) => Verdict::Deny(denied.to_string()),
        }
    }

    fn table_entries(&self) -> usize {
        self.device.installed_grant_count()
    }

    fn reachable(&self, requester: usize, access: AccessKind) -> Intervals {
        let ranges = self
            .held
            .iter()
            .flatten()
            .filter(|held| held.requester == requester && held.installed.rights.allows(access))
            .map(|held| (held.installed.range.base(), held.installed.range.end()));
        Intervals::from_ranges(ranges)
    }
}
