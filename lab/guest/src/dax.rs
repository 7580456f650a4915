//! The binary's memory accesses through a shared mapping of a device DAX character device
//! (`/dev/daxX.Y`): the word pattern, and `dax read`/`dax write` of any 8-byte-aligned range,
//! one volatile 8-byte access per word (so a capability-checking device sees each word as one
//! access, and a denied one reads all-ones).

use std::ffi::CString;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use crate::Failure;

/// The alignment of a device DAX mapping when sysfs does not tell (a regular file standing in
/// for one): 2 MiB, the default of a region's DAX device and of a devdax namespace.
const DEFAULT_ALIGNMENT: u64 = 2 << 20;

/// What a denied read returns, word by word.
const ALL_ONES: u64 = u64::MAX;

/// The word at `index`: the index mixed with a constant, so that no two words and no stuck bit
/// pattern look alike.
pub fn word(index: usize) -> u64 {
    (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xC0DE_CAFE_0000_0000
}

/// The word `dax write` puts at word `index` of the device (byte offset `8·index`): [`word`]
/// mixed with `seed`, so that writers with different seeds leave different bytes and a reader
/// of any part of the range knows what to expect.
fn seeded_word(index: usize, seed: u64) -> u64 {
    word(index) ^ seed.wrapping_mul(0xD1B5_4A32_D192_ED03)
}

/// Maps `bytes` of `device` from `offset` shared, runs `work` on it as words, unmaps.
pub fn with_mapping<T>(
    device: &str,
    offset: u64,
    bytes: usize,
    work: impl FnOnce(&mut [u64]) -> Result<T, Failure>,
) -> Result<T, Failure> {
    let path = CString::new(device).map_err(|_| format!("`{device}` holds a NUL"))?;
    // SAFETY: plain system calls on a path we own; every result is checked.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(format!("open {device}: {}", std::io::Error::last_os_error()).into());
        }
        let address = libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            offset as libc::off_t,
        );
        libc::close(fd);
        if address == libc::MAP_FAILED {
            return Err(format!(
                "mmap {bytes} bytes at {offset:#x} of {device}: {}",
                std::io::Error::last_os_error()
            )
            .into());
        }
        let result = work(std::slice::from_raw_parts_mut(
            address.cast::<u64>(),
            bytes / 8,
        ));
        libc::munmap(address, bytes);
        result
    }
}

/// The size of `device` and the alignment its mappings need: a device DAX character device's
/// from sysfs (`/sys/dev/char/MAJOR:MINOR/{size,align}`), a regular file's length and 2 MiB.
fn geometry(device: &str) -> Result<(u64, u64), String> {
    let metadata = std::fs::metadata(device).map_err(|error| format!("{device}: {error}"))?;
    if !metadata.file_type().is_char_device() {
        return Ok((metadata.len(), DEFAULT_ALIGNMENT));
    }
    let (major, minor) = (libc::major(metadata.rdev()), libc::minor(metadata.rdev()));
    let attribute = |name: &str| -> Result<u64, String> {
        let path = format!("/sys/dev/char/{major}:{minor}/{name}");
        let text = std::fs::read_to_string(&path)
            .map_err(|error| format!("{device}: {path}: {error} (not a device DAX device?)"))?;
        text.trim()
            .parse()
            .map_err(|_| format!("{path}: `{}` is not a number", text.trim()))
    };
    Ok((attribute("size")?, attribute("align")?))
}

/// Runs `work` on the words of `length` bytes at `offset` of `device`, through a mapping of the
/// aligned chunks that cover them. `work` gets the words and the device index of the first.
fn with_range<T>(
    device: &str,
    offset: u64,
    length: u64,
    work: impl FnOnce(&mut [u64], usize) -> Result<T, Failure>,
) -> Result<T, Failure> {
    if !offset.is_multiple_of(8) || !length.is_multiple_of(8) || length == 0 {
        return Err(format!("offset {offset:#x} and length {length:#x} must be multiples of 8 bytes, the length not 0").into());
    }
    let (size, alignment) = geometry(device)?;
    // Beyond the end the mapping would succeed and the first access kill us with SIGBUS.
    let end = offset.checked_add(length).filter(|end| *end <= size);
    let end = end.ok_or_else(|| {
        format!("{length:#x} bytes at {offset:#x} end beyond {device}'s {size:#x} bytes")
    })?;
    let map_start = offset / alignment * alignment;
    let map_end = end.div_ceil(alignment) * alignment;
    with_mapping(
        device,
        map_start,
        (map_end - map_start) as usize,
        |memory| {
            let first = ((offset - map_start) / 8) as usize;
            work(
                &mut memory[first..first + (length / 8) as usize],
                (offset / 8) as usize,
            )
        },
    )
}

/// `dax write`: fills the range with the seeded pattern.
pub fn write(device: &str, offset: u64, length: u64, seed: u64) -> Result<String, Failure> {
    with_range(device, offset, length, |words, first_index| {
        for (index, slot) in words.iter_mut().enumerate() {
            // SAFETY: `slot` is a valid, aligned word of the mapping.
            unsafe { std::ptr::write_volatile(slot, seeded_word(first_index + index, seed)) };
        }
        Ok(())
    })?;
    Ok(format!(
        "wrote {length} bytes at {offset:#x} seed {seed:#x}"
    ))
}

/// `dax read`: hashes the range and, given `expect_seed`, compares it with what `dax write` with
/// that seed leaves there (a mismatch is [`Failure::Mismatch`], naming the first word).
pub fn read(
    device: &str,
    offset: u64,
    length: u64,
    expect_seed: Option<u64>,
) -> Result<String, Failure> {
    let mut took = std::time::Duration::ZERO;
    let words: Vec<u64> = with_range(device, offset, length, |words, _| {
        let started = std::time::Instant::now();
        // SAFETY: every `slot` is a valid, aligned word of the mapping.
        let read = words.iter().map(|slot| unsafe { std::ptr::read_volatile(slot) }).collect();
        took = started.elapsed();
        Ok(read)
    })?;
    let mut hasher = blake3::Hasher::new();
    for found in &words {
        hasher.update(&found.to_le_bytes());
    }
    // The loads alone are timed (not the mapping, not the hash): `bench capability` compares
    // a capability-checked device's reads with an unchecked one's.
    let line = format!(
        "read {length} bytes at {offset:#x} blake3={} first_word={:#018x} reads_per_second={:.0}",
        hasher.finalize().to_hex(),
        words[0],
        words.len() as f64 / took.as_secs_f64().max(1e-9)
    );
    let Some(seed) = expect_seed else {
        return Ok(line);
    };
    let first_index = (offset / 8) as usize;
    let differing = |(index, found): (usize, &u64)| {
        (*found != seeded_word(first_index + index, seed)).then_some((index, *found))
    };
    let mut mismatches = words.iter().enumerate().filter_map(differing);
    let Some((index, found)) = mismatches.next() else {
        return Ok(format!("{line} matches seed {seed:#x}"));
    };
    let others = mismatches.count();
    let denied = if found == ALL_ONES {
        " (all-ones: what a denied read returns)"
    } else {
        ""
    };
    Err(Failure::Mismatch(format!(
        "{device}: the word at {:#x} reads {found:#018x}{denied}, seed {seed:#x} wrote {:#018x}; {} of {} words differ",
        offset + 8 * index as u64,
        seeded_word(first_index + index, seed),
        others + 1,
        words.len()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A regular file standing in for a DAX device: two alignment units of zeros.
    fn device(name: &str) -> std::path::PathBuf {
        let file =
            std::env::temp_dir().join(format!("cxl-lab-guest-{name}-{}", std::process::id()));
        std::fs::write(&file, vec![0u8; 2 * DEFAULT_ALIGNMENT as usize]).unwrap();
        file
    }

    #[test]
    fn a_seeded_write_reads_back_at_its_own_offset_and_through_a_sub_range() {
        let file = device("seeded");
        let path = file.to_str().unwrap();
        // Crosses the first 2 MiB boundary, so two chunks are mapped.
        let offset = DEFAULT_ALIGNMENT - 0x1000;
        assert_eq!(
            write(path, offset, 0x2000, 7).unwrap(),
            format!("wrote 8192 bytes at {offset:#x} seed 0x7")
        );
        let whole = read(path, offset, 0x2000, Some(7)).unwrap();
        assert!(
            whole.starts_with(&format!("read 8192 bytes at {offset:#x} blake3=")),
            "{whole}"
        );
        assert!(whole.ends_with(" matches seed 0x7"), "{whole}");
        let inner = read(path, offset + 0x1000, 0x800, Some(7)).unwrap();
        assert!(inner.ends_with(" matches seed 0x7"), "{inner}");
        let bytes = std::fs::read(&file).unwrap();
        assert_eq!(
            bytes[offset as usize..][..8],
            seeded_word((offset / 8) as usize, 7).to_le_bytes()
        );
        assert_eq!(
            bytes[offset as usize - 8..][..8],
            [0; 8],
            "nothing before the range is written"
        );
        std::fs::remove_file(file).unwrap();
    }

    #[test]
    fn a_read_with_the_wrong_seed_or_denied_words_names_the_first_difference() {
        let file = device("mismatch");
        let path = file.to_str().unwrap();
        write(path, 0, 0x100, 1).unwrap();
        let Err(Failure::Mismatch(wrong_seed)) = read(path, 0, 0x100, Some(2)) else {
            panic!("seed 2 matched seed 1's bytes")
        };
        assert!(
            wrong_seed.contains("the word at 0x0 reads")
                && wrong_seed.contains("32 of 32 words differ"),
            "{wrong_seed}"
        );
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[0x48..0x50].fill(0xff);
        std::fs::write(&file, &bytes).unwrap();
        let Err(Failure::Mismatch(denied)) = read(path, 0, 0x100, Some(1)) else {
            panic!("an all-ones word matched")
        };
        assert!(
            denied.contains(
                "the word at 0x48 reads 0xffffffffffffffff (all-ones: what a denied read returns)"
            ),
            "{denied}"
        );
        assert!(denied.ends_with("1 of 32 words differ"), "{denied}");
        std::fs::remove_file(file).unwrap();
    }

    #[test]
    fn the_hash_tells_different_contents_apart_and_unaligned_ranges_are_refused() {
        let file = device("hash");
        let path = file.to_str().unwrap();
        let zeros = read(path, 0x1000, 0x1000, None).unwrap();
        write(path, 0x1000, 0x1000, 3).unwrap();
        let written = read(path, 0x1000, 0x1000, None).unwrap();
        assert_ne!(zeros, written);
        assert!(zeros.contains(" first_word=0x0000000000000000 reads_per_second="), "{zeros}");
        let Err(Failure::Error(beyond)) = read(path, 2 * DEFAULT_ALIGNMENT - 8, 16, None) else {
            panic!("a range past the end was read")
        };
        assert!(
            beyond.ends_with(&format!("end beyond {path}'s 0x400000 bytes")),
            "{beyond}"
        );
        let Err(Failure::Error(unaligned)) = read(path, 4, 8, None) else {
            panic!("an unaligned offset was read")
        };
        assert!(unaligned.contains("multiples of 8"), "{unaligned}");
        std::fs::remove_file(file).unwrap();
    }
}
