//! The `capability` check (`docs/capability-lab.md`): two hosts share one capability-checked
//! memory backend, and tokens decide who touches what. Driven from the backend's first host (its
//! *owner*), with the second (the *peer*); one result per claim of the issue:
//!
//! 1. each host has a RAM region over its device, with a DAX device (nothing is granted yet, so
//!    nothing may touch the memory);
//! 2. the owner presents a root token of the whole backend and writes a pattern;
//! 3. the owner narrows it to one 4 KiB page, read-only, for the peer, and passes it on as bytes
//!    (the lab's data share);
//! 4. the peer presents it and reads the owner's pattern;
//! 5. the peer's read outside the page is denied (all-ones) and its guest sees the device's event;
//! 6. the peer's write is denied (dropped: the owner's bytes are unchanged) and seen as an event;
//! 7. a token with one bit flipped, 8. the owner's token narrowed to the owner (`Holder`) and
//!    presented by the peer, 9. an expired token are refused with the reason;
//! 10. after the lab's owner revokes, the peer's next read is denied;
//! 11. the regions are taken away again.
//!
//! A claim whose setup failed is an error naming the step it needed, not a failure of its own.

use std::path::Path;
use std::time::Duration;

use crate::capability::owner::{self, OwnerReply, OwnerRequest};
use crate::capability::service::unhex;
use crate::capability::ServiceConfig;
use crate::suite::decode;
use crate::suite::outcome::{Outcome, StepResult};
use crate::suite::region::{self, Planned, GUEST_TOOL};

/// The page the owner hands on, and the bytes it writes (two pages: the second is off-limits).
const PAGE: u64 = 0x1000;
const PATTERN_SEED: u64 = 0x5eed;
/// Where tokens go in the lab's data share: the host's `data/capability/`, every guest's
/// `/mnt/share/capability/`.
const SHARE_DIR: &str = "capability";
const GUEST_SHARE: &str = "/mnt/share";
/// `cxl-lab-guest cap present` exits 3 when the device refused the token.
const REFUSED_EXIT: i32 = 3;
const ALL_ONES: &str = "first_word=0xffffffffffffffff";

/// What a guest offers the check: the same as any suite step (see `run.rs`).
pub(super) trait CapabilityGuest {
    fn host(&self) -> &str;
    /// Runs `script` in the guest; its exit code, stdout and stderr, added to `transcript`.
    fn run(&self, script: &str, transcript: &mut String) -> Result<(i32, String), String>;
    /// Copies the lab's guest program in, once.
    fn install_guest_tool(&self) -> Result<(), String>;
    /// The region the model plans in the window of this host's capability device.
    fn region_plan(&self) -> Option<Planned<'_>>;
}

/// One host's side: its region, DAX device and memdev.
struct Side<'g> {
    guest: &'g dyn CapabilityGuest,
    requester: u16,
    memdev: String,
    region: String,
    dax: String,
}

/// The results so far, one per claim.
struct Claims<'n> {
    name: &'n str,
    results: Vec<StepResult>,
}

impl Claims<'_> {
    /// Runs `work` as claim `claim`; whether it passed.
    fn record(&mut self, claim: &str, work: impl FnOnce(&mut String) -> Result<(), String>) -> bool {
        let started = std::time::Instant::now();
        let mut transcript = String::new();
        let outcome = work(&mut transcript).map_or_else(Outcome::Failed, |()| Outcome::Passed);
        let passed = outcome == Outcome::Passed;
        self.results.push(StepResult { name: format!("{}: {claim}", self.name), outcome, duration: started.elapsed(), output: super::run::clip(transcript) });
        passed
    }

    /// `work` as claim `claim` when `needs` is `None`; otherwise an error naming what it needed.
    fn record_if(&mut self, needs: Option<&str>, claim: &str, work: impl FnOnce(&mut String) -> Result<(), String>) -> bool {
        match needs {
            None => self.record(claim, work),
            Some(reason) => {
                self.results.push(StepResult { name: format!("{}: {claim}", self.name), outcome: Outcome::Error(format!("not run: {reason}")), duration: Duration::ZERO, output: String::new() });
                false
            }
        }
    }
}

pub(super) fn check(name: &str, owner: &dyn CapabilityGuest, peer: &dyn CapabilityGuest, service: &ServiceConfig, data_dir: &Path) -> Vec<StepResult> {
    let mut claims = Claims { name, results: Vec::new() };
    let requester_of = |guest: &dyn CapabilityGuest| service.requesters.iter().find(|known| known.host == guest.host()).map(|known| known.requester);
    let (Some(owner_requester), Some(peer_requester)) = (requester_of(owner), requester_of(peer)) else {
        claims.record("the hosts share the backend", |_| Err(format!("{} and {} are not both requesters of `{}`", owner.host(), peer.host(), service.backend)));
        return claims.results;
    };
    let share = data_dir.join(SHARE_DIR);
    let guest_file = |file: &str| format!("{GUEST_SHARE}/{SHARE_DIR}/{file}");
    let tool = GUEST_TOOL;

    let mut sides: Vec<Side> = Vec::new();
    let set_up = claims.record("each host has a RAM region over its device and a DAX device on it, nothing granted yet", |transcript| {
        std::fs::create_dir_all(&share).map_err(|error| format!("creating {}: {error}", share.display()))?;
        for (guest, requester) in [(owner, owner_requester), (peer, peer_requester)] {
            sides.push(set_up_side(guest, requester, service, transcript)?);
        }
        Ok(())
    });
    let no_setup = (!set_up).then_some("the regions could not be set up");
    let (own, other) = match (sides.first(), sides.get(1)) {
        (Some(own), Some(other)) if set_up => (Some(own), Some(other)),
        _ => (None, None),
    };
    let mut root_token = String::new();

    let granted = claims.record_if(no_setup, "the owner presents a root token of the backend and writes a pattern", |transcript| {
        let own = own.expect("set up");
        // Not bound to a holder: host0 could not hand a narrowed copy on (two holders leave nobody).
        root_token = mint(service, OwnerRequest::Mint { start: 0, length: service.capacity_bytes, rights: 3, holder: None, expires_in_ms: None }, &share.join("root.tok"), transcript)?;
        expect_granted(own, &guest_file("root.tok"), transcript)?;
        run_ok(own.guest, &format!("{tool} dax write /dev/{} 0 {} {PATTERN_SEED}", own.dax, 2 * PAGE), transcript)?;
        run_ok(own.guest, &format!("{tool} dax read /dev/{} 0 {} --expect-seed {PATTERN_SEED}", own.dax, 2 * PAGE), transcript).map(drop)
    });
    let passed_on = claims.record_if(no_setup.or((!granted).then_some("the owner holds no grant")), "the owner narrows the token to one 4 KiB page, read-only, for the peer", |transcript| {
        let (own, other) = (own.expect("set up"), other.expect("set up"));
        run_ok(own.guest, &format!("{tool} cap attenuate {} {} --range 0x0+{PAGE:#x} --rights r --holder {}", guest_file("root.tok"), guest_file("page.tok"), other.requester), transcript).map(drop)
    });
    let read_shared = claims.record_if(no_setup.or((!passed_on).then_some("no page token was passed on")), "the peer presents the page token and reads the owner's pattern", |transcript| {
        let other = other.expect("set up");
        expect_granted(other, &guest_file("page.tok"), transcript)?;
        run_ok(other.guest, &format!("{tool} dax read /dev/{} 0 {PAGE} --expect-seed {PATTERN_SEED}", other.dax), transcript).map(drop)
    });
    let needs_grant = no_setup.or((!read_shared).then_some("the peer holds no page grant"));
    let (own, other) = match (own, other) {
        (Some(own), Some(other)) => (own, other),
        _ => {
            for claim in AFTER_GRANT {
                claims.record_if(needs_grant, claim, |_| Ok(()));
            }
            tear_down(&mut claims, &sides);
            return claims.results;
        }
    };
    claims.record_if(needs_grant, AFTER_GRANT[0], |transcript| {
        let before = denials(other.guest, transcript)?;
        let (_, read) = other.guest.run(&format!("{tool} dax read /dev/{} {PAGE} 8", other.dax), transcript)?;
        if !read.contains(ALL_ONES) {
            return Err(format!("the read at {PAGE:#x}, outside the page, was not denied: {}", read.trim()));
        }
        expect_denial(other, before, PAGE, "read", transcript)
    });
    claims.record_if(needs_grant, AFTER_GRANT[1], |transcript| {
        let before = denials(other.guest, transcript)?;
        run_ok(other.guest, &format!("{tool} dax write /dev/{} 0 8 {}", other.dax, PATTERN_SEED + 1), transcript)?;
        expect_denial(other, before, 0, "write", transcript)?;
        run_ok(own.guest, &format!("{tool} dax read /dev/{} 0 {PAGE} --expect-seed {PATTERN_SEED}", own.dax), transcript).map(drop)
    });
    claims.record_if(needs_grant, AFTER_GRANT[2], |transcript| {
        // The last bit is the tag's: any change of the bytes must fail the MAC.
        run_ok(other.guest, &format!("{tool} cap flip-bit {page} {forged} -1", page = guest_file("page.tok"), forged = guest_file("forged.tok")), transcript)?;
        expect_refused(other, &guest_file("forged.tok"), "bad-tag", transcript)
    });
    claims.record_if(needs_grant, AFTER_GRANT[3], |transcript| {
        run_ok(own.guest, &format!("{tool} cap attenuate {} {} --holder {}", guest_file("root.tok"), guest_file("owners.tok"), own.requester), transcript)?;
        expect_refused(other, &guest_file("owners.tok"), "wrong-holder", transcript)
    });
    claims.record_if(needs_grant, AFTER_GRANT[4], |transcript| {
        mint(service, OwnerRequest::Mint { start: 0, length: PAGE, rights: 1, holder: Some(other.requester), expires_in_ms: Some(1) }, &share.join("expired.tok"), transcript)?;
        std::thread::sleep(Duration::from_millis(50));
        expect_refused(other, &guest_file("expired.tok"), "expired", transcript)
    });
    claims.record_if(needs_grant, AFTER_GRANT[5], |transcript| {
        match owner::ask(&service.files.owner_socket(), &OwnerRequest::Revoke { token: root_token.clone() }).map_err(|error| format!("{error:#}"))? {
            OwnerReply::Revoked { token_id, outcome, .. } => transcript.push_str(&format!("host: revoked token {token_id}: {outcome}\n")),
            reply => return Err(format!("the service answered {reply:?} to a revocation")),
        }
        let before = denials(other.guest, transcript)?;
        let (_, read) = other.guest.run(&format!("{tool} dax read /dev/{} 0 8", other.dax), transcript)?;
        if !read.contains(ALL_ONES) {
            return Err(format!("the peer still reads the page after the revocation: {}", read.trim()));
        }
        expect_denial(other, before, 0, "read", transcript)
    });
    tear_down(&mut claims, &sides);
    claims.results
}

/// Takes the regions that were made away again, so the suite can run again on the lab.
fn tear_down(claims: &mut Claims, sides: &[Side]) {
    claims.record("the regions are taken away again", |transcript| {
        sides.iter().try_for_each(|side| run_ok(side.guest, &region::teardown_script("ram", &side.region, Some(&side.dax)), transcript).map(drop))
    });
}

/// The claims that need the peer's page grant.
const AFTER_GRANT: [&str; 6] = [
    "the peer's read outside the page is denied and its guest sees the event",
    "the peer's write is denied, the owner's bytes are unchanged, and the peer sees the event",
    "a token with one bit flipped is refused",
    "a token bound to the owner, presented by the peer, is refused",
    "an expired token is refused",
    "after the lab's owner revokes, the peer's next read is denied",
];

/// On a capability-checked device nothing may touch the memory before a token is presented: the
/// lab's owner mints `guest` a read-write token of the whole backend, bound to it, and the guest
/// presents it (the `regions` and `decode` checks on a capability backend, like any client).
pub(super) fn grant_whole_backend(guest: &dyn CapabilityGuest, service: &ServiceConfig, data_dir: &Path, transcript: &mut String) -> Result<(), String> {
    let share = data_dir.join(SHARE_DIR);
    std::fs::create_dir_all(&share).map_err(|error| format!("creating {}: {error}", share.display()))?;
    guest.install_guest_tool()?;
    let names = memdev_names(guest, transcript)?;
    for known in service.requesters.iter().filter(|known| known.host == guest.host()) {
        let memdev = names.get(&known.serial).cloned().ok_or_else(|| format!("{} shows no memdev with serial {}", guest.host(), known.serial))?;
        let file = format!("{}-{}.tok", known.host, known.device);
        mint(service, OwnerRequest::Mint { start: 0, length: service.capacity_bytes, rights: 3, holder: Some(known.requester), expires_in_ms: None }, &share.join(&file), transcript)?;
        let side = Side { guest, requester: known.requester, memdev, region: String::new(), dax: String::new() };
        expect_granted(&side, &format!("{GUEST_SHARE}/{SHARE_DIR}/{file}"), transcript)?;
    }
    Ok(())
}

fn memdev_names(guest: &dyn CapabilityGuest, transcript: &mut String) -> Result<std::collections::BTreeMap<u64, String>, String> {
    let listing = run_ok(guest, "cxl list -M", transcript)?;
    Ok(region::memdev_names(&serde_json::from_str(&listing).map_err(|error| format!("`cxl list -M` printed no JSON ({error})"))?))
}

fn set_up_side<'g>(guest: &'g dyn CapabilityGuest, requester: u16, service: &ServiceConfig, transcript: &mut String) -> Result<Side<'g>, String> {
    let serial = service.requesters.iter().find(|known| known.requester == requester).map(|known| known.serial).ok_or("no serial")?;
    let plan = guest.region_plan().ok_or_else(|| format!("the model plans no region for {}", guest.host()))?;
    guest.install_guest_tool()?;
    let names = memdev_names(guest, transcript)?;
    let memdev = names.get(&serial).cloned().ok_or_else(|| format!("{} shows no memdev with serial {serial}", guest.host()))?;
    let created = run_ok(guest, &region::create_command(&plan, &names)?, transcript)?;
    let created: serde_json::Value = serde_json::from_str(&created).map_err(|error| format!("`cxl create-region` printed no JSON ({error})"))?;
    let region = region::check_created(&plan, &created)?;
    let dax = run_ok(guest, &region::dax_script("ram", &region), transcript)?.trim().to_owned();
    run_ok(guest, &region::devdax_command(&dax), transcript)?;
    // Token ranges are DPAs: the DAX device must start where the region (at DPA 0) does.
    let base = decode::region_resource(&created)?;
    let (start, _) = decode::parse_extent(&run_ok(guest, &decode::extent_script(&dax), transcript)?)?;
    if start != base {
        return Err(format!("{dax} starts at {start:#x}, not at {region}'s base {base:#x}: its offsets would not be DPAs"));
    }
    // Enables the device's event tracing before anything can be denied.
    run_ok(guest, &format!("{GUEST_TOOL} cap events"), transcript)?;
    Ok(Side { guest, requester, memdev, region, dax })
}

/// Mints through the lab's owner socket and writes the token's bytes to `file` in the share;
/// returns the token as hex (for revoking it).
fn mint(service: &ServiceConfig, request: OwnerRequest, file: &Path, transcript: &mut String) -> Result<String, String> {
    transcript.push_str(&format!("host: lab cap mint {request:?}\n"));
    match owner::ask(&service.files.owner_socket(), &request).map_err(|error| format!("{error:#}"))? {
        OwnerReply::Minted { token, token_id, epoch } => {
            let bytes = unhex(&token).ok_or("the service minted no hex")?;
            std::fs::write(file, &bytes).map_err(|error| format!("writing {}: {error}", file.display()))?;
            transcript.push_str(&format!("host: token {token_id} of epoch {epoch}, {} bytes, in {}\n", bytes.len(), file.display()));
            Ok(token)
        }
        other => Err(format!("the service answered {other:?} to a mint")),
    }
}

fn expect_granted(side: &Side, token: &str, transcript: &mut String) -> Result<(), String> {
    let (code, stdout) = side.guest.run(&format!("{GUEST_TOOL} cap present {} {token}", side.memdev), transcript)?;
    if code != 0 || !stdout.starts_with("granted") {
        return Err(format!("{} presented {token}: exit {code}, `{}`; expected granted", side.guest.host(), stdout.trim()));
    }
    Ok(())
}

fn expect_refused(side: &Side, token: &str, reason: &str, transcript: &mut String) -> Result<(), String> {
    let (code, stdout) = side.guest.run(&format!("{GUEST_TOOL} cap present {} {token}", side.memdev), transcript)?;
    if code != REFUSED_EXIT || !stdout.starts_with(&format!("refused {reason}")) {
        return Err(format!("{} presented {token}: exit {code}, `{}`; expected `refused {reason}` (exit {REFUSED_EXIT})", side.guest.host(), stdout.trim()));
    }
    Ok(())
}

/// The denial events the guest has seen so far (`cap events`' last line).
fn denials(guest: &dyn CapabilityGuest, transcript: &mut String) -> Result<Vec<String>, String> {
    let output = run_ok(guest, &format!("{GUEST_TOOL} cap events"), transcript)?;
    Ok(output.lines().filter(|line| line.starts_with("denial ")).map(str::to_owned).collect())
}

/// A new denial event of `access` at `dpa` by this side's requester since `before`.
fn expect_denial(side: &Side, before: Vec<String>, dpa: u64, access: &str, transcript: &mut String) -> Result<(), String> {
    let wanted = [format!("dpa={dpa:#x} "), format!("access={access} "), format!("requester={} ", side.requester)];
    // Linux reads the event log from the device's interrupt: give it a moment.
    for _ in 0..20 {
        let now = denials(side.guest, transcript)?;
        if now.iter().skip(before.len()).any(|line| wanted.iter().all(|part| line.contains(part.as_str()))) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Err(format!("{}'s guest saw no denial event of a {access} at DPA {dpa:#x} by requester {}", side.guest.host(), side.requester))
}

/// `script`'s stdout; any exit but 0 is the error.
fn run_ok(guest: &dyn CapabilityGuest, script: &str, transcript: &mut String) -> Result<String, String> {
    let (code, stdout) = guest.run(script, transcript)?;
    if code != 0 {
        return Err(format!("`{script}` on {} exited {code}", guest.host()));
    }
    Ok(stdout)
}
