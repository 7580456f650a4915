//! The grant table the service publishes and the capability-checking device maps read-only
//! (`docs/capability-lab.md`, "The grant table"): a 64-byte header, then fixed 40-byte entries,
//! the grants cut into disjoint segments sorted by (requester, start), so the device's check is
//! a binary search, no cryptography.
//!
//! The file is written in place as a seqlock: `seq` odd while the entries change, even when
//! they are whole, so a device never acts on a half-written table (it retries, and denies when a
//! writer never finishes). Its size is fixed when it is created; the device maps it once.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt as _;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{fence, AtomicU64, Ordering};

use anyhow::{bail, Context as _};
use cxl_lab_cap::{AccessKind, InstalledGrant, RequesterId};
use memmap2::MmapMut;

pub const MAGIC: u32 = 0x474c_5843; // "CXLG"
pub const VERSION: u32 = 1;
pub const HEADER_BYTES: usize = 64;
pub const ENTRY_BYTES: usize = 40;
/// Entries a table holds: what `lab/cap` lets requesters install (`DeviceConfig`'s per-requester
/// limit) times the requesters a lab has is far below this.
pub const DEFAULT_CAPACITY: usize = 65_536;

const SEQ_OFFSET: usize = 8;
const COUNT_OFFSET: usize = 16;
const CAPACITY_OFFSET: usize = 24;

/// One segment as the device reads it: a byte range of one requester, readable and writable
/// until the given Unix milliseconds (0: not at all, `u64::MAX`: forever).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub requester: u16,
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    pub read_until: u64,
    pub write_until: u64,
}

/// Cuts the installed grants into disjoint segments sorted by (requester, start), each with the
/// latest expiry of the grants that cover it and allow reads (writes): one sweep over the grants'
/// boundaries, so overlapping grants of any shape give a table the device searches in O(log n).
pub fn segments(grants: &[(RequesterId, InstalledGrant)]) -> Vec<Segment> {
    // (requester, position, opens, grant index), closings before openings at one position.
    let mut events: Vec<(u16, u64, bool, usize)> = Vec::with_capacity(grants.len() * 2);
    for (index, (requester, grant)) in grants.iter().enumerate() {
        events.push((requester.0, grant.range.base(), true, index));
        events.push((requester.0, grant.range.end(), false, index));
    }
    events.sort_unstable();
    let until = |grant: &InstalledGrant| grant.expires_after.map_or(u64::MAX, |last| last.as_millis().max(1));
    let mut segments: Vec<Segment> = Vec::new();
    let (mut reads, mut writes) = (BTreeMap::<u64, usize>::new(), BTreeMap::<u64, usize>::new());
    let mut index = 0;
    while index < events.len() {
        let (requester, position) = (events[index].0, events[index].1);
        while index < events.len() && (events[index].0, events[index].1) == (requester, position) {
            let grant = &grants[events[index].3].1;
            for (allowed, open) in [(grant.rights.allows(AccessKind::Read), &mut reads), (grant.rights.allows(AccessKind::Write), &mut writes)] {
                if allowed {
                    let count = open.entry(until(grant)).or_default();
                    if events[index].2 {
                        *count += 1;
                    } else {
                        *count -= 1;
                        if *count == 0 {
                            open.remove(&until(grant));
                        }
                    }
                }
            }
            index += 1;
        }
        let Some(&(next_requester, next_position, ..)) = events.get(index) else { break };
        let (read_until, write_until) = (reads.keys().next_back().copied().unwrap_or(0), writes.keys().next_back().copied().unwrap_or(0));
        if next_requester != requester || (read_until == 0 && write_until == 0) {
            continue;
        }
        match segments.last_mut() {
            Some(last) if last.requester == requester && last.end == position && (last.read_until, last.write_until) == (read_until, write_until) => last.end = next_position,
            _ => segments.push(Segment { requester, start: position, end: next_position, read_until, write_until }),
        }
    }
    segments
}

/// The published table, mapped read-write by the service only.
pub struct GrantTableFile {
    map: MmapMut,
    capacity: usize,
}

impl GrantTableFile {
    /// Creates (or replaces) the table file at `path`, 0600, empty, for `capacity` entries.
    pub fn create(path: &Path, capacity: usize) -> anyhow::Result<GrantTableFile> {
        let _ = std::fs::remove_file(path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("creating the grant table {}", path.display()))?;
        file.set_len((HEADER_BYTES + capacity * ENTRY_BYTES) as u64)?;
        // SAFETY: the file is ours (created above, 0600, in the lab's private run directory);
        // nothing else writes it, and QEMU maps it read-only.
        let mut map = unsafe { MmapMut::map_mut(&file) }.with_context(|| format!("mapping {}", path.display()))?;
        map[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        map[4..8].copy_from_slice(&VERSION.to_le_bytes());
        map[CAPACITY_OFFSET..CAPACITY_OFFSET + 8].copy_from_slice(&(capacity as u64).to_le_bytes());
        Ok(GrantTableFile { map, capacity })
    }

    /// Replaces the table's entries with `segments` ([`segments`]' order), as one seqlock write.
    pub fn publish(&mut self, segments: &[Segment]) -> anyhow::Result<()> {
        if segments.len() > self.capacity {
            bail!("the grants make {} segments, more than the grant table's {} entries", segments.len(), self.capacity);
        }
        let bytes = encode(segments);
        let seq = self.seq();
        let before = seq.load(Ordering::Relaxed);
        seq.store(before | 1, Ordering::Relaxed);
        fence(Ordering::Release);
        self.map[HEADER_BYTES..HEADER_BYTES + bytes.len()].copy_from_slice(&bytes);
        self.map[COUNT_OFFSET..COUNT_OFFSET + 8].copy_from_slice(&(segments.len() as u64).to_le_bytes());
        fence(Ordering::Release);
        self.seq().store((before | 1) + 1, Ordering::Release);
        Ok(())
    }

    fn seq(&self) -> &AtomicU64 {
        let pointer = self.map[SEQ_OFFSET..].as_ptr() as *const AtomicU64;
        // SAFETY: the mapping is page-aligned, so offset 8 is 8-aligned, and it lives as long as
        // `self`; the device only reads the word.
        unsafe { &*pointer }
    }
}

/// The segments as the device reads them.
pub fn encode(segments: &[Segment]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(segments.len() * ENTRY_BYTES);
    for segment in segments {
        for word in [segment.start, segment.end, segment.read_until, segment.write_until] {
            bytes.extend_from_slice(&word.to_le_bytes());
        }
        bytes.extend_from_slice(&segment.requester.to_le_bytes());
        bytes.extend_from_slice(&[0; 6]);
    }
    bytes
}

/// What the device decides for an access, from the table's entries: the patch's search when the
/// segment of its last access does not hold the address (`cap_find`, a binary search, then
/// `cap_segments_allow` over the next segments while the access runs on), so the tests pin and
/// the benchmark measures the same algorithm.
pub fn lookup(entries: &[u8], requester: u16, start: u64, length: u64, write: bool, now_ms: u64) -> bool {
    let word = |index: usize, offset: usize| u64::from_le_bytes(entries[index * ENTRY_BYTES + offset..][..8].try_into().expect("8 bytes"));
    let requester_of = |index: usize| u16::from_le_bytes(entries[index * ENTRY_BYTES + 32..][..2].try_into().expect("2 bytes"));
    let count = entries.len() / ENTRY_BYTES;
    let (mut low, mut high) = (0, count);
    while low < high {
        let middle = low + (high - low) / 2;
        let r = requester_of(middle);
        if r < requester || (r == requester && word(middle, 8) <= start) {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    let (mut at, end) = (start, start.saturating_add(length));
    for index in low..count {
        let until = word(index, if write { 24 } else { 16 });
        // 0: never (the device's clock is past 1970, so its `until < now` says the same).
        if requester_of(index) != requester || word(index, 0) > at || until == 0 || until < now_ms {
            return false;
        }
        if word(index, 8) >= end {
            return true;
        }
        at = word(index, 8);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use cxl_lab_cap::{AddressRange, Rights, Timestamp, TokenId};

    fn grant(requester: u16, start: u64, end: u64, rights: Rights, expires_ms: Option<u64>) -> (RequesterId, InstalledGrant) {
        let range = AddressRange::new(start, end - start).unwrap();
        (RequesterId(requester), InstalledGrant { token_id: TokenId(1), range, rights, expires_after: expires_ms.map(Timestamp::from_millis) })
    }

    #[test]
    fn overlapping_grants_become_disjoint_segments_with_the_latest_expiry() {
        let grants = [
            grant(2, 0, 0x10_0000, Rights::READ, None),
            grant(2, 0x2000, 0x2100, Rights::READ_WRITE, Some(5_000)),
            grant(1, 0, 0x1000, Rights::READ_WRITE, None),
            grant(1, 0x1000, 0x2000, Rights::READ_WRITE, None),
        ];
        let segments = segments(&grants);
        assert_eq!(
            segments,
            [
                Segment { requester: 1, start: 0, end: 0x2000, read_until: u64::MAX, write_until: u64::MAX },
                Segment { requester: 2, start: 0, end: 0x2000, read_until: u64::MAX, write_until: 0 },
                Segment { requester: 2, start: 0x2000, end: 0x2100, read_until: u64::MAX, write_until: 5_000 },
                Segment { requester: 2, start: 0x2100, end: 0x10_0000, read_until: u64::MAX, write_until: 0 },
            ],
            "requester 1's adjacent grants merge; requester 2's write grant is cut out of its read grant"
        );
        let bytes = encode(&segments);
        assert!(lookup(&bytes, 2, 0x3000, 8, false, 0));
        assert!(!lookup(&bytes, 2, 0x3000, 8, true, 0), "nobody granted requester 2 writes there");
        assert!(lookup(&bytes, 2, 0x20f8, 8, true, 5_000));
        assert!(!lookup(&bytes, 2, 0x20f8, 8, true, 5_001), "the write grant expired");
        assert!(!lookup(&bytes, 2, 0x20fc, 8, true, 0), "the write runs past the write grant");
        assert!(lookup(&bytes, 2, 0x20fc, 8, false, 0), "a read across two segments that both allow it");
        assert!(lookup(&bytes, 1, 0xffc, 8, true, 0), "across the boundary of two merged grants");
        assert!(!lookup(&bytes, 1, 0x1ffc, 8, false, 0), "past the end of requester 1's grants");
        assert!(!lookup(&bytes, 3, 0, 8, false, 0), "requester 3 holds nothing");
    }

    #[test]
    fn a_published_table_reads_back_with_an_even_sequence_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grants.table");
        let mut table = GrantTableFile::create(&path, 4).unwrap();
        let one = segments(&[grant(1, 0, 0x1000, Rights::READ, None)]);
        table.publish(&one).unwrap();
        table.publish(&segments(&[grant(1, 0, 0x1000, Rights::READ, None), grant(2, 0, 0x1000, Rights::READ_WRITE, None)])).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), HEADER_BYTES + 4 * ENTRY_BYTES);
        assert_eq!(u64::from_le_bytes(bytes[SEQ_OFFSET..][..8].try_into().unwrap()), 4);
        assert_eq!(u64::from_le_bytes(bytes[COUNT_OFFSET..][..8].try_into().unwrap()), 2);
        assert!(lookup(&bytes[HEADER_BYTES..HEADER_BYTES + 2 * ENTRY_BYTES], 2, 0x800, 8, true, 0));
        let many: Vec<Segment> = (0..5).map(|index| Segment { requester: 1, start: index * 2, end: index * 2 + 1, read_until: 1, write_until: 0 }).collect();
        assert!(table.publish(&many).is_err(), "more segments than entries");
    }
}
