//! Sharing scenarios (`scenarios/*.yaml`, `docs/scenarios.md`): who may read or write which
//! buffer, who delegates to whom, revocations and an access trace with forbidden accesses. Parsed
//! with the profiles' machinery: every error names file, line, column and field.

pub mod eval;
pub mod report;
pub mod schema;

use std::collections::HashMap;

use serde_saphyr::Spanned;

use crate::error::{parse_yaml, ErrorSink, ProfileErrors};
use crate::protection::policy::{AccessKind, Buffer, Grant, Policy, Requester, Rights};
use schema::*;

/// Buffers start on page boundaries, one after another.
pub const BUFFER_ALIGN: u64 = 4096;
/// Bytes each access of a sweep touches.
pub const SWEEP_ACCESS: u64 = 64;

/// One step of a scenario, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Grant(Grant),
    /// Revokes the grant with this index (in the order of the grant steps) and its delegations.
    Revoke(usize),
    Access(Access),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    pub requester: usize,
    pub address: u64,
    pub length: u64,
    pub access: AccessKind,
}

#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub requesters: Vec<Requester>,
    pub buffers: Vec<Buffer>,
    pub steps: Vec<Step>,
}

impl Scenario {
    /// The policy before any step.
    pub fn empty_policy(&self) -> Policy {
        Policy::new(self.requesters.clone(), self.buffers.clone())
    }

    /// The most grants one requester ever receives: what an installed-grant table must hold.
    pub fn grants_per_requester(&self) -> usize {
        let mut counts = vec![0usize; self.requesters.len()];
        for step in &self.steps {
            if let Step::Grant(grant) = step {
                counts[grant.requester] += 1;
            }
        }
        counts.into_iter().max().unwrap_or(0)
    }
}

/// Parses and checks one scenario; `default_name` is its name when it gives none.
pub fn parse_scenario(file: &str, source: &str, default_name: &str) -> Result<Scenario, ProfileErrors> {
    let parsed: ScenarioFile = parse_yaml(file, source)?;
    let mut checker = Checker { sink: ErrorSink::new(file), requesters: Names::default(), buffers: Names::default() };
    let requesters = checker.requesters(&parsed.requesters);
    let buffers = checker.buffers(&parsed.buffers);
    let mut builder = StepBuilder { policy: Policy::new(requesters, buffers), steps: Vec::new(), delegations: HashMap::new() };
    checker.grants(&mut builder, &parsed.grants);
    checker.delegations(&mut builder, &parsed.delegations);
    checker.trace(&mut builder, &parsed.trace);
    let scenario = Scenario {
        name: parsed.name.unwrap_or_else(|| default_name.to_owned()),
        description: parsed.description.trim().to_owned(),
        requesters: builder.policy.requesters,
        buffers: builder.policy.buffers,
        steps: builder.steps,
    };
    checker.sink.finish(scenario)
}

/// Names and groups (`<name>` of a `count`) to indices.
#[derive(Default)]
struct Names(HashMap<String, Vec<usize>>);

impl Names {
    fn add(&mut self, name: String, index: usize) {
        self.0.entry(name).or_default().push(index);
    }
}

/// The steps so far, and the policy they make, to resolve delegations and sweeps.
struct StepBuilder {
    policy: Policy,
    steps: Vec<Step>,
    delegations: HashMap<String, usize>,
}

impl StepBuilder {
    fn grant(&mut self, grant: Grant) -> usize {
        self.steps.push(Step::Grant(grant.clone()));
        self.policy.add_grant(grant)
    }
}

struct Checker<'f> {
    sink: ErrorSink<'f>,
    requesters: Names,
    buffers: Names,
}

/// `name` alone, or `name0` .. `name<count-1>` with the group `name`.
fn expand(name: &str, count: Option<&Spanned<u32>>) -> Vec<String> {
    match count {
        None => vec![name.to_owned()],
        Some(count) => (0..count.value).map(|index| format!("{name}{index}")).collect(),
    }
}

fn parse_rights(text: &str) -> Option<Rights> {
    match text {
        "r" => Some(Rights::READ),
        "w" => Some(Rights::WRITE),
        "rw" => Some(Rights::READ_WRITE),
        _ => None,
    }
}

fn parse_access(text: &str) -> Option<AccessKind> {
    match text {
        "read" => Some(AccessKind::Read),
        "write" => Some(AccessKind::Write),
        _ => None,
    }
}

impl Checker<'_> {
    fn requesters(&mut self, specs: &Spanned<Vec<RequesterSpec>>) -> Vec<Requester> {
        if specs.value.is_empty() {
            self.sink.at(specs, "requesters", "a scenario needs at least one requester".to_owned());
        }
        let mut requesters = Vec::new();
        for (index, spec) in specs.value.iter().enumerate() {
            let field = format!("requesters[{index}].name");
            for name in expand(&spec.name.value, spec.count.as_ref()) {
                self.unique(&spec.name, &field, &name, true);
                let port = spec.port.clone().unwrap_or_else(|| name.clone());
                self.requesters.add(name.clone(), requesters.len());
                requesters.push(Requester { name, port });
            }
            if let Some(count) = &spec.count {
                self.unique(&spec.name, &field, &spec.name.value, true);
                let members: Vec<usize> = (requesters.len() - count.value as usize..requesters.len()).collect();
                self.requesters.0.insert(spec.name.value.clone(), members);
            }
        }
        if requesters.len() > usize::from(u16::MAX) + 1 {
            self.sink.at(specs, "requesters", format!("{} requesters: CXL requester ids have 16 bits", requesters.len()));
        }
        requesters
    }

    fn buffers(&mut self, specs: &Spanned<Vec<BufferSpec>>) -> Vec<Buffer> {
        let mut buffers: Vec<Buffer> = Vec::new();
        let mut next_base = 0u64;
        for (index, spec) in specs.value.iter().enumerate() {
            if spec.size.value.bytes() == 0 {
                self.sink.at(&spec.size, &format!("buffers[{index}].size"), "a buffer of zero bytes".to_owned());
            }
            let first = buffers.len();
            for name in expand(&spec.name.value, spec.count.as_ref()) {
                self.unique(&spec.name, &format!("buffers[{index}].name"), &name, false);
                self.buffers.add(name.clone(), buffers.len());
                buffers.push(Buffer { name, base: next_base, size: spec.size.value.bytes() });
                // The buffers are laid out one after another in a 64-bit address space.
                let Some(next) = next_base.checked_add(spec.size.value.bytes()).and_then(|end| end.checked_next_multiple_of(BUFFER_ALIGN)) else {
                    self.sink.at(&spec.size, &format!("buffers[{index}].size"), "the buffers do not fit in a 64-bit address space".to_owned());
                    return buffers;
                };
                next_base = next;
            }
            if spec.count.is_some() {
                self.unique(&spec.name, &format!("buffers[{index}].name"), &spec.name.value, false);
                self.buffers.0.insert(spec.name.value.clone(), (first..buffers.len()).collect());
            }
        }
        buffers
    }

    fn unique(&mut self, at: &Spanned<String>, field: &str, name: &str, requester: bool) {
        let names = if requester { &self.requesters } else { &self.buffers };
        if names.0.contains_key(name) {
            self.sink.at(at, field, format!("`{name}` is defined twice"));
        }
    }

    /// The one index a name stands for; a group or an unknown name is an error at it.
    fn single(&mut self, name: &Spanned<String>, field: &str, requester: bool) -> Option<usize> {
        match self.resolve(name, field, requester)[..] {
            [index] => Some(index),
            [] => None,
            ref group => {
                self.sink.at(name, field, format!("`{}` is a group of {}; name one of them", name.value, group.len()));
                None
            }
        }
    }

    /// The indices a name stands for (one, or a group's), or an error at it.
    fn resolve(&mut self, name: &Spanned<String>, field: &str, requester: bool) -> Vec<usize> {
        let (names, what) = if requester { (&self.requesters, "requester") } else { (&self.buffers, "buffer") };
        match names.0.get(&name.value) {
            Some(indices) => indices.clone(),
            None => {
                self.sink.at(name, field, format!("no {what} `{}`", name.value));
                Vec::new()
            }
        }
    }

    fn rights(&mut self, rights: &Spanned<String>, field: &str) -> Rights {
        parse_rights(&rights.value).unwrap_or_else(|| {
            self.sink.at(rights, field, format!("rights `{}` are not r, w or rw", rights.value));
            Rights::NONE
        })
    }

    fn grants(&mut self, builder: &mut StepBuilder, specs: &[GrantSpec]) {
        for (index, spec) in specs.iter().enumerate() {
            let field = format!("grants[{index}]");
            let rights = self.rights(&spec.rights, &format!("{field}.rights"));
            let buffers = self.resolve(&spec.buffer, &format!("{field}.buffer"), false);
            let holders = self.grant_holders(spec, &field, buffers.len());
            for (buffer, holders) in buffers.into_iter().zip(holders) {
                for requester in holders {
                    builder.grant(Grant { requester, buffer, rights, delegated_by: None, may_delegate: spec.delegate });
                }
            }
        }
    }

    /// For each of `buffer_count` buffers, who gets it: the requester (or group), or the next
    /// pair of the `pairwise` list.
    fn grant_holders(&mut self, spec: &GrantSpec, field: &str, buffer_count: usize) -> Vec<Vec<usize>> {
        match (&spec.requester, &spec.pairwise) {
            (Some(requester), None) => vec![self.resolve(requester, &format!("{field}.requester"), true); buffer_count],
            (None, Some(among)) => {
                let mut members = Vec::new();
                for (index, name) in among.value.iter().enumerate() {
                    members.extend(self.resolve(name, &format!("{field}.pairwise[{index}]"), true));
                }
                let pairs: Vec<Vec<usize>> = (0..members.len())
                    .flat_map(|first| members[first + 1..].iter().map(move |&second| (first, second)))
                    .map(|(first, second)| vec![members[first], second])
                    .collect();
                if pairs.is_empty() {
                    self.sink.at(among, &format!("{field}.pairwise"), "pairwise needs at least two requesters".to_owned());
                    return vec![Vec::new(); buffer_count];
                }
                (0..buffer_count).map(|index| pairs[index % pairs.len()].clone()).collect()
            }
            _ => {
                self.sink.at(&spec.buffer, field, "give either `requester` or `pairwise`".to_owned());
                vec![Vec::new(); buffer_count]
            }
        }
    }

    fn delegations(&mut self, builder: &mut StepBuilder, specs: &[DelegationSpec]) {
        for (index, spec) in specs.iter().enumerate() {
            let field = format!("delegations[{index}]");
            let rights = self.rights(&spec.rights, &format!("{field}.rights"));
            let (Some(from), Some(to), Some(buffer)) = (
                self.single(&spec.from, &format!("{field}.from"), true),
                self.single(&spec.to, &format!("{field}.to"), true),
                self.single(&spec.buffer, &format!("{field}.buffer"), false),
            ) else {
                continue;
            };
            let parent = builder.policy.active_grants().find(|(_, grant)| grant.requester == from && grant.buffer == buffer).map(|(index, grant)| (index, grant.clone()));
            let parent = match parent {
                Some((index, grant)) if grant.may_delegate && rights.is_subset_of(grant.rights) => index,
                Some(_) => {
                    let message = format!("`{}` may not hand on `{}` with these rights", spec.from.value, spec.buffer.value);
                    self.sink.at(&spec.from, &format!("{field}.from"), message);
                    continue;
                }
                None => {
                    self.sink.at(&spec.from, &format!("{field}.from"), format!("`{}` holds no grant of `{}`", spec.from.value, spec.buffer.value));
                    continue;
                }
            };
            let grant = builder.grant(Grant { requester: to, buffer, rights, delegated_by: Some(parent), may_delegate: spec.delegate });
            if builder.delegations.insert(spec.id.value.clone(), grant).is_some() {
                self.sink.at(&spec.id, &format!("{field}.id"), format!("delegation id `{}` is used twice", spec.id.value));
            }
        }
    }

    fn trace(&mut self, builder: &mut StepBuilder, specs: &[TraceSpec]) {
        for (index, spec) in specs.iter().enumerate() {
            let field = format!("trace[{index}]");
            match (&spec.revoke, &spec.sweep) {
                (Some(revoke), None) => match builder.delegations.get(&revoke.value) {
                    Some(&grant) => {
                        builder.policy.revoke(grant);
                        builder.steps.push(Step::Revoke(grant));
                    }
                    None => self.sink.at(revoke, &format!("{field}.revoke"), format!("no delegation `{}`", revoke.value)),
                },
                (None, Some(group)) => {
                    let buffers = self.resolve(group, &format!("{field}.sweep"), false);
                    builder.steps.extend(sweep(&builder.policy, &buffers).map(Step::Access));
                }
                (None, None) => {
                    if let Some(access) = self.access(builder, spec, &field) {
                        builder.steps.push(Step::Access(access));
                    }
                }
                (Some(revoke), Some(_)) => self.sink.at(revoke, &field, "a step is a revoke or a sweep, not both".to_owned()),
            }
        }
    }

    fn access(&mut self, builder: &StepBuilder, spec: &TraceSpec, field: &str) -> Option<Access> {
        let (Some(requester), Some(buffer), Some(length), Some(access)) = (&spec.requester, &spec.buffer, &spec.length, &spec.access) else {
            let message = "an access needs requester, buffer, length and access (or give revoke: or sweep:)".to_owned();
            // At the step's first key: an empty step (`- {}`) has none, and only then line 1.
            let first = [&spec.requester, &spec.buffer, &spec.access].into_iter().flatten().next();
            match (first, &spec.length) {
                (Some(present), _) => self.sink.at(present, field, message),
                (None, Some(length)) => self.sink.at(length, field, message),
                (None, None) => self.sink.at_start(field, message),
            }
            return None;
        };
        let kind = parse_access(&access.value);
        if kind.is_none() {
            self.sink.at(access, &format!("{field}.access"), format!("access `{}` is not read or write", access.value));
        }
        if length.value == 0 {
            self.sink.at(length, &format!("{field}.length"), "an access of zero bytes".to_owned());
        }
        let requester = self.single(requester, &format!("{field}.requester"), true);
        let buffer_index = self.single(buffer, &format!("{field}.buffer"), false)?;
        let Some(address) = builder.policy.buffers[buffer_index].base.checked_add(spec.offset) else {
            self.sink.at(buffer, &format!("{field}.offset"), format!("offset {} from `{}` is beyond a 64-bit address", spec.offset, buffer.value));
            return None;
        };
        Some(Access { requester: requester?, address, length: length.value, access: kind? })
    }
}

/// Each grantee of each buffer reads its first bytes and writes its last; the first requester
/// without a grant of it reads it (a forbidden access).
fn sweep<'p>(policy: &'p Policy, buffers: &'p [usize]) -> impl Iterator<Item = Access> + 'p {
    buffers.iter().flat_map(move |&buffer| {
        let span = &policy.buffers[buffer];
        let holders: Vec<(usize, Rights)> =
            policy.active_grants().filter(|(_, grant)| grant.buffer == buffer).map(|(_, grant)| (grant.requester, grant.rights)).collect();
        let outsider = (0..policy.requesters.len()).find(|requester| holders.iter().all(|(holder, _)| holder != requester));
        let length = SWEEP_ACCESS.min(span.size);
        let mut accesses = Vec::new();
        for (requester, _) in &holders {
            accesses.push(Access { requester: *requester, address: span.base, length, access: AccessKind::Read });
            accesses.push(Access { requester: *requester, address: span.base + span.size - length, length, access: AccessKind::Write });
        }
        accesses.extend(outsider.map(|requester| Access { requester, address: span.base, length, access: AccessKind::Read }));
        accesses
    })
}

#[cfg(test)]
mod tests;
