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

use std::ffi::CString;
use std::os::unix::fs::FileTypeExt;
use std::process::ExitCode;

use cxl_lab_guest::{granule_tag, TAG_BYTES};

fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let result = match arguments.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["pattern", device, bytes] => bytes.parse().map_err(|_| format!("`{bytes}` is not a byte count")).and_then(|bytes| pattern(device, bytes)),
        ["tag", device, label, base, granularity, count] => {
            let number = |text: &str| parse_number(text).ok_or_else(|| format!("`{text}` is not a number"));
            (|| tag(device, label, number(base)?, number(granularity)?, number(count)?))()
        }
        _ => Err("usage: cxl-lab-guest pattern DEVICE BYTES | tag DEVICE LABEL BASE GRANULARITY COUNT".to_owned()),
    };
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("cxl-lab-guest: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The word at `index`: the index mixed with a constant, so that no two words and no stuck bit
/// pattern look alike.
fn word(index: usize) -> u64 {
    (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xC0DE_CAFE_0000_0000
}

fn pattern(device: &str, bytes: usize) -> Result<String, String> {
    let words = bytes / 8;
    with_mapping(device, bytes, |memory| {
        for (index, slot) in memory.iter_mut().take(words).enumerate() {
            // SAFETY: `slot` is a valid, aligned word of the mapping.
            unsafe { std::ptr::write_volatile(slot, word(index)) };
        }
        Ok(())
    })?;
    with_mapping(device, bytes, |memory| {
        for (index, slot) in memory.iter().take(words).enumerate() {
            // SAFETY: as above.
            let found = unsafe { std::ptr::read_volatile(slot) };
            if found != word(index) {
                return Err(format!("{device}: word {index} (offset {:#x}) reads {found:#018x}, wrote {:#018x}", index * 8, word(index)));
            }
        }
        Ok(())
    })?;
    Ok(format!("{device}: wrote and read back {bytes} bytes"))
}

fn parse_number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// The block size direct I/O writes in: a pmem block device's logical block size.
const SECTOR: u64 = 512;

fn tag(device: &str, label: &str, base: u64, granularity: u64, count: u64) -> Result<String, String> {
    if granularity < TAG_BYTES as u64 {
        return Err(format!("granularity {granularity} is below a tag's {TAG_BYTES} bytes"));
    }
    let bytes = granularity * count;
    let metadata = std::fs::metadata(device).map_err(|error| format!("{device}: {error}"))?;
    let tags = (0..count).map(|index| (index * granularity, granule_tag(label, index, base + index * granularity)));
    if metadata.file_type().is_char_device() {
        with_mapping(device, bytes as usize, |memory| {
            let memory = memory.as_mut_ptr().cast::<u8>();
            for (offset, tag) in tags {
                // SAFETY: `offset + TAG_BYTES` is inside the mapping (offset < bytes, granularity ≥ TAG_BYTES).
                unsafe { std::ptr::copy_nonoverlapping(tag.as_ptr(), memory.add(offset as usize), TAG_BYTES) };
            }
            Ok(())
        })?;
    } else {
        write_sectors(device, metadata.file_type().is_block_device(), tags)?;
    }
    Ok(format!("{device}: tagged {count} granules of {granularity} bytes from HPA {base:#x}"))
}

/// Writes each tag by direct I/O of the sector it starts in (with every other tag of that
/// sector; a tag never crosses a sector: granules are 256-byte aligned and tags 64 bytes).
/// A regular file (the unit test's) is written through the page cache and synced.
fn write_sectors(device: &str, block_device: bool, tags: impl Iterator<Item = (u64, [u8; TAG_BYTES])>) -> Result<(), String> {
    let path = CString::new(device).map_err(|_| format!("`{device}` holds a NUL"))?;
    let layout = std::alloc::Layout::from_size_align(SECTOR as usize, SECTOR as usize).expect("a sector is a valid layout");
    // SAFETY: a buffer of `layout` for direct I/O, freed below; the fd is checked and closed.
    unsafe {
        let direct = if block_device { libc::O_DIRECT } else { libc::O_SYNC };
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | direct | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(format!("open {device}: {}", std::io::Error::last_os_error()));
        }
        let buffer = std::alloc::alloc_zeroed(layout);
        let sector = std::slice::from_raw_parts_mut(buffer, SECTOR as usize);
        let mut result = Ok(());
        let mut current: Option<u64> = None;
        let flush = |start: u64, sector: &mut [u8]| -> Result<(), String> {
            let written = libc::pwrite(fd, sector.as_ptr().cast(), sector.len(), start as libc::off_t);
            sector.fill(0);
            if written != sector.len() as isize {
                return Err(format!("write {} bytes at {start:#x} of {device}: {}", sector.len(), std::io::Error::last_os_error()));
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

/// Maps `bytes` of `device` shared, runs `work` on it as words, unmaps.
fn with_mapping(device: &str, bytes: usize, work: impl FnOnce(&mut [u64]) -> Result<(), String>) -> Result<(), String> {
    let path = CString::new(device).map_err(|_| format!("`{device}` holds a NUL"))?;
    // SAFETY: plain system calls on a path we own; every result is checked.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(format!("open {device}: {}", std::io::Error::last_os_error()));
        }
        let address = libc::mmap(std::ptr::null_mut(), bytes, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0);
        libc::close(fd);
        if address == libc::MAP_FAILED {
            return Err(format!("mmap {bytes} bytes of {device}: {}", std::io::Error::last_os_error()));
        }
        let result = work(std::slice::from_raw_parts_mut(address.cast::<u64>(), bytes / 8));
        libc::munmap(address, bytes);
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
            assert_eq!(written[at..at + TAG_BYTES], granule_tag("region3", index, 0x1000_0000 + index * 256));
        }
        std::fs::remove_file(file).unwrap();
    }
}
