//! Runs a scenario through every protection mechanism and measures how well each expresses it:
//! bytes exposed beyond the policy, table entries, wrong verdicts on the trace, grants and
//! revocations a central party had to carry out, and the time to check the trace.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Access, Scenario, Step};
use crate::protection::capability::Capabilities;
use crate::protection::policy::{AccessKind, Policy};
use crate::protection::{gfam, host_decode, multi_headed, Actor, Mechanism};

/// One mechanism's figures on one scenario.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub mechanism: &'static str,
    /// Every grant exact, nothing exposed beyond the policy, no wrong verdict.
    pub expresses_policy: bool,
    /// Grants the mechanism had to widen (to its unit, or merging to fit its entry limit).
    pub widened_grants: usize,
    /// The most bytes, summed over requesters and over read and write, the mechanism let a
    /// requester reach that the policy did not, at any point of the trace.
    pub bytes_over_exposed: u64,
    /// The most table entries in use at any point.
    pub table_entries: usize,
    pub forbidden_allowed: usize,
    pub permitted_denied: usize,
    /// Delegations and revocations that someone other than the holder had to carry out.
    pub central_actions: usize,
    /// Who those were (fabric manager, host, device).
    pub central_actor: Option<String>,
    pub accesses_checked: usize,
    /// Time spent in `check` over the whole trace.
    pub check_nanos: u128,
}

/// The mechanisms compared, each configured from the scenario's empty policy.
pub fn mechanisms(scenario: &Scenario) -> Vec<Box<dyn Mechanism>> {
    let policy = scenario.empty_policy();
    vec![
        Box::new(host_decode::mechanism(&policy)),
        Box::new(multi_headed::mechanism(&policy)),
        Box::new(gfam::mechanism(&policy)),
        Box::new(Capabilities::new(&policy, scenario.grants_per_requester())),
    ]
}

/// Every mechanism's outcome on `scenario`.
pub fn evaluate(scenario: &Scenario) -> Vec<Outcome> {
    mechanisms(scenario).into_iter().map(|mut mechanism| run(scenario, mechanism.as_mut())).collect()
}

/// Replays the steps: grants and revocations change the policy and the mechanism; each run of
/// accesses is checked in one timed batch, then compared with the policy.
pub fn run(scenario: &Scenario, mechanism: &mut dyn Mechanism) -> Outcome {
    let mut policy = scenario.empty_policy();
    let mut outcome = Outcome {
        mechanism: mechanism.name(),
        expresses_policy: false,
        widened_grants: 0,
        bytes_over_exposed: 0,
        table_entries: 0,
        forbidden_allowed: 0,
        permitted_denied: 0,
        central_actions: 0,
        central_actor: None,
        accesses_checked: 0,
        check_nanos: 0,
    };
    let mut elapsed = Duration::ZERO;
    let mut index = 0;
    while index < scenario.steps.len() {
        match &scenario.steps[index] {
            Step::Grant(grant) => {
                let added = policy.add_grant(grant.clone());
                let installed = mechanism.grant(&policy, added);
                outcome.widened_grants += usize::from(!installed.exact);
                if grant.delegated_by.is_some() {
                    count_central(&mut outcome, &[installed.by]);
                }
            }
            Step::Revoke(grant) => {
                let revoked = policy.revoke(*grant);
                count_central(&mut outcome, &mechanism.revoke(&policy, &revoked));
            }
            Step::Access(_) => {
                let batch: Vec<Access> = accesses_from(&scenario.steps[index..]);
                measure_state(&mut outcome, &policy, mechanism);
                elapsed += check_batch(&mut outcome, &policy, mechanism, &batch);
                index += batch.len();
                continue;
            }
        }
        index += 1;
    }
    measure_state(&mut outcome, &policy, mechanism);
    outcome.check_nanos = elapsed.as_nanos();
    outcome.expresses_policy = outcome.widened_grants == 0
        && outcome.bytes_over_exposed == 0
        && outcome.forbidden_allowed == 0
        && outcome.permitted_denied == 0;
    outcome
}

/// Gives every grant and revocation of the scenario effect, in order, skipping the accesses:
/// the state its trace ends in, for benchmarks of `check` alone.
pub fn apply_policy_steps(scenario: &Scenario, mechanism: &mut dyn Mechanism) -> Policy {
    let mut policy = scenario.empty_policy();
    for step in &scenario.steps {
        match step {
            Step::Grant(grant) => {
                let added = policy.add_grant(grant.clone());
                mechanism.grant(&policy, added);
            }
            Step::Revoke(grant) => {
                let revoked = policy.revoke(*grant);
                mechanism.revoke(&policy, &revoked);
            }
            Step::Access(_) => {}
        }
    }
    policy
}

/// Every access of the trace, in order.
pub fn accesses(scenario: &Scenario) -> Vec<Access> {
    scenario.steps.iter().filter_map(|step| if let Step::Access(access) = step { Some(*access) } else { None }).collect()
}

fn accesses_from(steps: &[Step]) -> Vec<Access> {
    steps
        .iter()
        .map_while(|step| match step {
            Step::Access(access) => Some(*access),
            _ => None,
        })
        .collect()
}

fn count_central(outcome: &mut Outcome, actors: &[Actor]) {
    for actor in actors.iter().filter(|actor| **actor != Actor::Holder) {
        outcome.central_actions += 1;
        outcome.central_actor = Some(format!("{actor:?}"));
    }
}

/// Over-exposure and table size now, kept when larger than before.
fn measure_state(outcome: &mut Outcome, policy: &Policy, mechanism: &dyn Mechanism) {
    let mut exposed = 0;
    for requester in 0..policy.requesters.len() {
        for access in [AccessKind::Read, AccessKind::Write] {
            exposed += mechanism.reachable(requester, access).bytes_outside(&policy.allowed(requester, access));
        }
    }
    outcome.bytes_over_exposed = outcome.bytes_over_exposed.max(exposed);
    outcome.table_entries = outcome.table_entries.max(mechanism.table_entries());
}

/// Checks the batch (timed alone), then counts verdicts that disagree with the policy.
fn check_batch(outcome: &mut Outcome, policy: &Policy, mechanism: &dyn Mechanism, batch: &[Access]) -> Duration {
    let started = Instant::now();
    let verdicts: Vec<bool> =
        batch.iter().map(|access| mechanism.check(access.requester, access.address, access.length, access.access).allowed()).collect();
    let elapsed = started.elapsed();
    for (access, allowed) in batch.iter().zip(verdicts) {
        let permitted = policy.allows(access.requester, access.address, access.length, access.access);
        outcome.forbidden_allowed += usize::from(allowed && !permitted);
        outcome.permitted_denied += usize::from(!allowed && permitted);
    }
    outcome.accesses_checked += batch.len();
    elapsed
}
