//! `cxl-lab-guest`: runs in the guest, copied in by `lab run` (built on the host: the guest's
//! Debian is newer than the host's, so a host-built binary runs there).
//!
//! `cxl-lab-guest pattern DEVICE BYTES`: maps `BYTES` of a device DAX character device
//! (`/dev/daxX.Y`; a multiple of its alignment, 2 MiB by default), writes a pattern that differs
//! in every 8-byte word, unmaps, maps again and reads it back. Exit 0 and one line when every
//! word came back; exit 1 naming the first word that did not.
//!
//! `cxl-lab-guest tag DEVICE LABEL BASE GRANULARITY COUNT`: writes granule `i`'s tag
//! ([`cxl_lab_guest::granule_tag`], HPA `BASE + i·GRANULARITY`) at offset `i·GRANULARITY` of
//! DEVICE, whose offset 0 is HPA `BASE`: through a shared mapping of a device DAX character
//! device, or by direct I/O of whole sectors to a block device (`/dev/pmemX`; no page cache, so
//! the bytes are in the device's memory when it returns).
//!
//! `cxl-lab-guest dax write DEVICE OFFSET LEN SEED` and
//! `cxl-lab-guest dax read DEVICE OFFSET LEN [--expect-seed SEED]`: one volatile 8-byte access per
//! word of `LEN` bytes at `OFFSET` of a device DAX character device (both multiples of 8, inside
//! the device's size; the chunks of its alignment around them, from sysfs, are mapped shared). `write` fills the range with the word
//! pattern mixed with `SEED` (word `i` of the device always gets the same value for a seed, so a
//! read of part of the range checks too). `read` prints
//! `read LEN bytes at OFFSET blake3=<hex> first_word=0x...`, and with `--expect-seed` adds
//! `matches seed SEED` when every word is what `write` with that seed put there, or exits 4
//! naming the first word that differs (all-ones is what a capability device returns for a
//! denied read, and the message says so).
//!
//! `cxl-lab-guest cap present MEMDEV TOKEN_FILE`: presents the token's bytes to the device
//! behind `/dev/cxl/MEMDEV` with the Present Capability mailbox command (opcode 0xC000, through
//! Linux's raw command interface) and prints the verdict: `granted requester=2 range=0x0+0x1000
//! rights=r expires_ms=0` (exit 0) or `refused bad-tag requester=2` (exit 3, so a suite tells a
//! refusal from a failure). An ioctl error or a return code other than Success exits 1 naming it.
//!
//! `cxl-lab-guest cap present-all MEMDEV DIR`: presents every token file of `DIR` in name order
//! (exit 3 at the first refusal) and prints how many were granted and the time from the ioctl to
//! the verdict (median, min, p90, max in µs): how `bench capability` installs many grants and
//! measures the present-to-granted latency.
//!
//! `cxl-lab-guest cap attenuate IN OUT [--range START+LEN] [--rights r|rw|w] [--holder N]
//! [--not-after-ms MS | --expires-in-ms MS]`: the token in file `IN` with those caveats appended
//! in the order given (no secret needed), written to `OUT` atomically (0600, written beside and
//! renamed). `--expires-in-ms` counts from the guest's clock; the device decides by the host's.
//!
//! `cxl-lab-guest cap flip-bit IN OUT BIT`: a copy of `IN` with bit `BIT % 8` of byte `BIT / 8`
//! flipped: a forged token. A negative `BIT` counts from the end: `-1` flips the tag's last bit,
//! so the token still decodes and only the device can tell (`bad-tag`; a bit elsewhere may make
//! it `malformed`).
//!
//! `cxl-lab-guest cap events [--since-handle H]`: mounts tracefs if it is not, enables the
//! `cxl_generic_event` and `cxl_overflow` trace events if they are not, and prints one line per
//! denial record in the trace (a `cxl_generic_event` with the lab's UUID; with a record handle
//! above `H` if given; handles count per device): `denial memdev=mem0 dpa=0x1000 length=8
//! access=read requester=2 denials=3 handle=0x3`, then `denials events=K overflow_records=M` (M:
//! `cxl_overflow` lines: records the device's 8-entry log dropped). Run it once before the
//! accesses to enable tracing.
//!
//! `cxl-lab-guest mailbox MEMDEV OPCODE OUTPUT_BYTES [INPUT_FILE]`: any mailbox command through
//! the same raw interface (input payload from the file, if any), printing the output payload as
//! hex: `opcode 0x4000: 67 bytes out: 42 57 ...` (Identify, to check the raw path on any device).
//!
//! Numbers may be written in hex with `0x`. Exit codes: 0 success, 1 error (message on stderr),
//! 3 the device refused a token (the verdict on stdout), 4 `dax read` found other bytes.

use std::ffi::CString;
use std::os::unix::fs::FileTypeExt;
use std::process::ExitCode;

use cxl_lab_guest::{granule_tag, parse_number, TAG_BYTES};

mod cap;
mod dax;

use dax::{with_mapping, word};

const USAGE: &str = "usage: cxl-lab-guest pattern DEVICE BYTES | tag DEVICE LABEL BASE GRANULARITY COUNT \
| dax write DEVICE OFFSET LEN SEED | dax read DEVICE OFFSET LEN [--expect-seed SEED] \
| cap present MEMDEV TOKEN_FILE | cap present-all MEMDEV DIR | cap attenuate IN OUT [--range START+LEN] [--rights r|rw|w] [--holder N] [--not-after-ms MS | --expires-in-ms MS] \
| cap flip-bit IN OUT BIT | cap events [--since-handle H] | mailbox MEMDEV OPCODE OUTPUT_BYTES [INPUT_FILE]";

/// How a command ended other than with its success line; each has its exit code.
#[derive(Debug)]
pub enum Failure {
    /// Exit 1, the message on stderr.
    Error(String),
    /// Exit 3: the device refused a token; its verdict on stdout.
    Refused(String),
    /// Exit 4: `dax read` found other bytes than it was told to expect; on stderr.
    Mismatch(String),
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure::Error(message)
    }
}

fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let number = |text: &str| parse_number(text).ok_or_else(|| format!("`{text}` is not a number"));
    let result: Result<String, Failure> = match arguments
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["pattern", device, bytes] => bytes
            .parse()
            .map_err(|_| format!("`{bytes}` is not a byte count").into())
            .and_then(|bytes| pattern(device, bytes)),
        ["tag", device, label, base, granularity, count] => (|| {
            tag(
                device,
                label,
                number(base)?,
                number(granularity)?,
                number(count)?,
            )
        })(),
        ["dax", "write", device, offset, length, seed] => {
            (|| dax::write(device, number(offset)?, number(length)?, number(seed)?))()
        }
        ["dax", "read", device, offset, length] => {
            (|| dax::read(device, number(offset)?, number(length)?, None))()
        }
        ["dax", "read", device, offset, length, "--expect-seed", seed] => (|| {
            dax::read(
                device,
                number(offset)?,
                number(length)?,
                Some(number(seed)?),
            )
        })(),
        ["cap", "present", memdev, token_file] => cap::present(memdev, token_file),
        ["cap", "present-all", memdev, dir] => cap::present_all(memdev, dir),
        ["cap", "attenuate", input, output, options @ ..] => cap::attenuate(input, output, options),
        ["cap", "flip-bit", input, output, bit] => cap::flip_bit(input, output, bit),
        ["mailbox", memdev, opcode, output_bytes] => {
            cap::raw_command(memdev, opcode, output_bytes, None)
        }
        ["mailbox", memdev, opcode, output_bytes, input_file] => {
            cap::raw_command(memdev, opcode, output_bytes, Some(input_file))
        }
        ["cap", "events"] => cap::events(None),
        ["cap", "events", "--since-handle", handle] => cap::events(Some(handle)),
        _ => Err(USAGE.to_owned().into()),
    };
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(Failure::Refused(verdict)) => {
            println!("{verdict}");
            ExitCode::from(3)
        }
        Err(Failure::Mismatch(message)) => {
            eprintln!("cxl-lab-guest: {message}");
            ExitCode::from(4)
        }
        Err(Failure::Error(message)) => {
            eprintln!("cxl-lab-guest: {message}");
            ExitCode::FAILURE
        }
    }
}

fn pattern(device: &str, bytes: usize) -> Result<String, Failure> {
    let words = bytes / 8;
    with_mapping(device, 0, bytes, |memory| {
        for (index, slot) in memory.iter_mut().take(words).enumerate() {
            // SAFETY: `slot` is a valid, aligned word of the mapping.
            unsafe { std::ptr::write_volatile(slot, word(index)) };
        }
        Ok(())
    })?;
    with_mapping(device, 0, bytes, |memory| {
        for (index, slot) in memory.iter().take(words).enumerate() {
            // SAFETY: as above.
            let found = unsafe { std::ptr::read_volatile(slot) };
            if found != word(index) {
                return Err(format!(
                    "{device}: word {index} (offset {:#x}) reads {found:#018x}, wrote {:#018x}",
                    index * 8,
                    word(index)
                )
                .into());
            }
        }
        Ok(())
    })?;
    Ok(format!("{device}: wrote and read back {bytes} bytes"))
}

/// The block size direct I/O writes in: a pmem block device's logical block size.
const SECTOR: u64 = 512;

fn tag(
    device: &str,
    label: &str,
    base: u64,
    granularity: u64,
    count: u64,
) -> Result<String, Failure> {
    if granularity < TAG_BYTES as u64 {
        return Err(format!("granularity {granularity} is below a tag's {TAG_BYTES} bytes").into());
    }
    let bytes = granularity * count;
    let metadata = std::fs::metadata(device).map_err(|error| format!("{device}: {error}"))?;
    let tags = (0..count).map(|index| {
        (
            index * granularity,
            granule_tag(label, index, base + index * granularity),
        )
    });
    if metadata.file_type().is_char_device() {
        with_mapping(device, 0, bytes as usize, |memory| {
            let memory = memory.as_mut_ptr().cast::<u8>();
            for (offset, tag) in tags {
                // SAFETY: `offset + TAG_BYTES` is inside the mapping (offset < bytes, granularity ≥ TAG_BYTES).
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        tag.as_ptr(),
                        memory.add(offset as usize),
                        TAG_BYTES,
                    )
                };
            }
            Ok(())
        })?;
    } else {
        write_sectors(device, metadata.file_type().is_block_device(), tags)?;
    }
    Ok(format!(
        "{device}: tagged {count} granules of {granularity} bytes from HPA {base:#x}"
    ))
}

/// Writes each tag by direct I/O of the sector it starts in (with every other tag of that
/// sector; a tag never crosses a sector: granules are 256-byte aligned and tags 64 bytes).
/// A regular file (the unit test's) is written through the page cache and synced.
fn write_sectors(
    device: &str,
    block_device: bool,
    tags: impl Iterator<Item = (u64, [u8; TAG_BYTES])>,
) -> Result<(), String> {
    let path = CString::new(device).map_err(|_| format!("`{device}` holds a NUL"))?;
    let layout = std::alloc::Layout::from_size_align(SECTOR as usize, SECTOR as usize)
        .expect("a sector is a valid layout");
    // SAFETY: a buffer of `layout` for direct I/O, freed below; the fd is checked and closed.
    unsafe {
        let direct = if block_device {
            libc::O_DIRECT
        } else {
            libc::O_SYNC
        };
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | direct | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(format!(
                "open {device}: {}",
                std::io::Error::last_os_error()
            ));
        }
        let buffer = std::alloc::alloc_zeroed(layout);
        let sector = std::slice::from_raw_parts_mut(buffer, SECTOR as usize);
        let mut result = Ok(());
        let mut current: Option<u64> = None;
        let flush = |start: u64, sector: &mut [u8]| -> Result<(), String> {
            let written = libc::pwrite(
                fd,
                sector.as_ptr().cast(),
                sector.len(),
                start as libc::off_t,
            );
            sector.fill(0);
            if written != sector.len() as isize {
                return Err(format!(
                    "write {} bytes at {start:#x} of {device}: {}",
                    sector.len(),
                    std::io::Error::last_os_error()
                ));
            }
            Ok(())
        };
        for (offset, tag) in tags {
            let start = offset / SECTOR * SECTOR;
            if let Some(previous) = current.filter(|previous| *previous != start) {
                result = flush(previous, sector);
                if result.is_err() {
                    break;
                }
            }
            current = Some(start);
            let within = (offset - start) as usize;
            sector[within..within + TAG_BYTES].copy_from_slice(&tag);
        }
        if let (Ok(()), Some(start)) = (&result, current) {
            result = flush(start, sector);
        }
        std::alloc::dealloc(buffer, layout);
        libc::close(fd);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_round_trips_through_a_shared_file_mapping() {
        let file = std::env::temp_dir().join(format!("cxl-lab-guest-{}", std::process::id()));
        std::fs::write(&file, vec![0u8; 1 << 16]).unwrap();
        let line = pattern(file.to_str().unwrap(), 1 << 16).unwrap();
        assert!(line.ends_with("wrote and read back 65536 bytes"), "{line}");
        assert_eq!(std::fs::read(&file).unwrap()[..8], word(0).to_ne_bytes());
        std::fs::remove_file(file).unwrap();
    }

    #[test]
    fn tags_land_at_the_start_of_every_granule() {
        let file = std::env::temp_dir().join(format!("cxl-lab-guest-tag-{}", std::process::id()));
        std::fs::write(&file, vec![0u8; 1 << 16]).unwrap();
        let line = tag(file.to_str().unwrap(), "region3", 0x1000_0000, 256, 256).unwrap();
        assert!(line.contains("tagged 256 granules of 256 bytes"), "{line}");
        let written = std::fs::read(&file).unwrap();
        for index in [0u64, 1, 17, 255] {
            let at = (index * 256) as usize;
            assert_eq!(
                written[at..at + TAG_BYTES],
                granule_tag("region3", index, 0x1000_0000 + index * 256)
            );
        }
        std::fs::remove_file(file).unwrap();
    }
}
