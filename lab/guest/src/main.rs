//! `cxl-lab-guest`: runs in the guest, copied in by `lab run` (built on the host: the guest's
//! Debian is newer than the host's, so a host-built binary runs there).
//!
//! `cxl-lab-guest pattern DEVICE BYTES`: maps `BYTES` of a device DAX character device
//! (`/dev/daxX.Y`; a multiple of its alignment, 2 MiB by default), writes a pattern that differs
//! in every 8-byte word, unmaps, maps again and reads it back. Exit 0 and one line when every
//! word came back; exit 1 naming the first word that did not.

use std::ffi::CString;
use std::process::ExitCode;

fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let result = match arguments.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["pattern", device, bytes] => bytes.parse().map_err(|_| format!("`{bytes}` is not a byte count")).and_then(|bytes| pattern(device, bytes)),
        _ => Err("usage: cxl-lab-guest pattern DEVICE BYTES".to_owned()),
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
}
