use super::capability::Capabilities;
use super::intervals::Intervals;
use super::policy::{AccessKind, Buffer, Grant, Policy, Requester, Rights};
use super::port_table::{Inexpressible, PortTable};
use super::*;
use crate::size::{KIB, MIB};

/// `count` disjoint ranges of `size` bytes, a gap of `size` between each.
fn disjoint(count: u64, size: u64) -> Intervals {
    Intervals::from_ranges((0..count).map(|index| (index * 2 * size, index * 2 * size + size)))
}

fn too_many(result: Result<(), Inexpressible>) -> (usize, usize) {
    match result {
        Err(Inexpressible::TooManyEntries { needed, max, .. }) => (needed, max),
        other => panic!("expected a refusal for too many entries, got {other:?}"),
    }
}

#[test]
fn a_head_of_a_multi_headed_device_holds_16_regions_not_17() {
    let mut table = PortTable::new(multi_headed::LIMITS);
    assert_eq!(table.program_exact("host0", &disjoint(16, 256 * MIB)), Ok(()));
    assert_eq!(too_many(table.program_exact("host0", &disjoint(17, 256 * MIB))), (17, 16));
}

#[test]
fn a_gfam_requester_holds_8_translation_ranges_not_9() {
    let mut table = PortTable::new(gfam::LIMITS);
    assert_eq!(table.program_exact("spid1", &disjoint(8, 64 * MIB)), Ok(()));
    assert_eq!(too_many(table.program_exact("spid1", &disjoint(9, 64 * MIB))), (9, 8));
}

#[test]
fn gfam_memory_groups_are_at_least_64_mib() {
    let mut table = PortTable::new(gfam::LIMITS);
    assert_eq!(table.program_exact("spid1", &disjoint(1, 64 * MIB)), Ok(()));
    let refused = table.program_exact("spid1", &disjoint(1, 4 * KIB)).unwrap_err();
    assert!(matches!(refused, Inexpressible::OffUnit { unit, .. } if unit == 64 * MIB), "{refused}");
    assert!(refused.to_string().contains("Table 7-67"), "{refused}");
}

#[test]
fn host_decode_maps_whole_256_mib_decoders_at_most_32() {
    let mut table = PortTable::new(host_decode::LIMITS);
    assert!(matches!(table.program_exact("host0", &disjoint(1, 4 * KIB)), Err(Inexpressible::OffUnit { .. })));
    assert_eq!(too_many(table.program_exact("host0", &disjoint(33, 256 * MIB))), (33, 32));
}

/// Two VMs on one host, a 4 KiB buffer each, and an accelerator on its own port that VM a
/// lets read its buffer.
fn tenants() -> Policy {
    let requester = |name: &str, port: &str| Requester { name: name.into(), port: port.into() };
    let buffer = |name: &str, base: u64| Buffer { name: name.into(), base, size: 4 * KIB };
    let mut policy = Policy::new(
        vec![requester("vm-a", "host0"), requester("vm-b", "host0"), requester("gpu", "gpu0")],
        vec![buffer("a", 0), buffer("b", 4 * KIB)],
    );
    policy.add_grant(Grant { requester: 0, buffer: 0, rights: Rights::READ_WRITE, delegated_by: None, may_delegate: true });
    policy.add_grant(Grant { requester: 1, buffer: 1, rights: Rights::READ_WRITE, delegated_by: None, may_delegate: false });
    policy
}

/// vm-a hands the GPU read access to its buffer.
const GPU_READS_A: Grant = Grant { requester: 2, buffer: 0, rights: Rights::READ, delegated_by: Some(0), may_delegate: false };

fn give_all(mechanism: &mut dyn Mechanism, policy: &Policy) -> Vec<Installed> {
    (0..policy.grants.len()).map(|grant| mechanism.grant(policy, grant)).collect()
}

/// The tenants' grants given, then vm-a's delegation to the GPU: what it cost.
fn delegate_to_gpu<M: Mechanism>(make: impl Fn(&Policy) -> M) -> (Policy, M, usize, Installed) {
    let mut policy = tenants();
    let mut mechanism = make(&policy);
    give_all(&mut mechanism, &policy);
    let delegated = policy.add_grant(GPU_READS_A);
    let installed = mechanism.grant(&policy, delegated);
    (policy, mechanism, delegated, installed)
}

#[test]
fn host_decode_cannot_keep_vms_of_one_host_apart_capabilities_can() {
    let policy = tenants();
    let mut host = host_decode::mechanism(&policy);
    let mut capabilities = Capabilities::new(&policy, 4);
    assert!(give_all(&mut host, &policy).iter().all(|installed| !installed.exact));
    assert!(give_all(&mut capabilities, &policy).iter().all(|installed| installed.exact && installed.by == Actor::Device));
    // vm-b reads vm-a's buffer.
    assert!(host.check(1, 0, 64, AccessKind::Read).allowed());
    assert!(!capabilities.check(1, 0, 64, AccessKind::Read).allowed());
    assert!(capabilities.check(0, 0, 64, AccessKind::Write).allowed());
    assert_eq!(host.reachable(1, AccessKind::Read).bytes(), 256 * MIB);
    assert_eq!((host.table_entries(), capabilities.table_entries()), (1, 2));
}

#[test]
fn a_holder_delegates_read_only_without_the_device_and_revocation_needs_it() {
    let (mut policy, mut capabilities, delegated, installed) = delegate_to_gpu(|policy| Capabilities::new(policy, 4));
    assert_eq!(installed, Installed { exact: true, by: Actor::Holder });
    assert!(capabilities.check(2, 64, 64, AccessKind::Read).allowed());
    assert!(!capabilities.check(2, 64, 64, AccessKind::Write).allowed());

    let revoked = policy.revoke(delegated);
    // The device revokes the family and mints vm-a a fresh token.
    assert_eq!(capabilities.revoke(&policy, &revoked), [Actor::Device, Actor::Device]);
    assert!(!capabilities.check(2, 64, 64, AccessKind::Read).allowed());
    assert!(capabilities.check(0, 64, 64, AccessKind::Write).allowed());
}

#[test]
fn gfam_delegation_needs_the_fabric_manager_and_exposes_the_whole_group() {
    let (policy, fabric, _, installed) = delegate_to_gpu(gfam::mechanism);
    assert_eq!(installed, Installed { exact: false, by: Actor::FabricManager });
    // Read-only is not expressible, nor is 4 KiB: the GPU may write the whole 64 MiB group.
    assert!(fabric.check(2, 8 * KIB, 64, AccessKind::Write).allowed());
    assert_eq!(fabric.reachable(2, AccessKind::Write).bytes_outside(&policy.allowed(2, AccessKind::Write)), 64 * MIB);
}
