//! A CXL mailbox command sent from user space: the RAW command of `CXL_MEM_SEND_COMMAND` on a
//! memdev's character device (`/dev/cxl/memN`), as Linux's uapi `include/uapi/linux/cxl_mem.h`
//! defines it. The kernel passes any opcode it does not reserve for itself (it needs
//! `CONFIG_CXL_MEM_RAW_COMMANDS`, and warns once per boot that the raw path was used).

use std::ffi::CString;

/// `CXL_MEM_COMMAND_ID_RAW`: the third id of the uapi's command enum (INVALID, IDENTIFY, RAW, ...).
const COMMAND_ID_RAW: u32 = 2;

/// `struct cxl_send_command`, 48 bytes.
#[repr(C)]
#[derive(Default)]
struct SendCommand {
    id: u32,
    flags: u32,
    /// The `raw` member of the union: the opcode, then a reserved u16.
    raw_opcode: u16,
    raw_reserved: u16,
    retval: u32,
    in_size: u32,
    in_reserved: u32,
    in_payload: u64,
    out_size: u32,
    out_reserved: u32,
    out_payload: u64,
}

const _: () = assert!(std::mem::size_of::<SendCommand>() == 48);

/// `CXL_MEM_SEND_COMMAND`: `_IOWR(0xCE, 2, struct cxl_send_command)`.
const SEND_COMMAND: libc::c_ulong = ioctl_read_write(0xCE, 2, std::mem::size_of::<SendCommand>());

/// The Linux `_IOWR` encoding (direction bits 3 at 30, size at 16, type at 8, number at 0).
const fn ioctl_read_write(kind: u8, number: u8, size: usize) -> libc::c_ulong {
    (3 << 30)
        | ((size as libc::c_ulong) << 16)
        | ((kind as libc::c_ulong) << 8)
        | number as libc::c_ulong
}

/// Why a mailbox command did not complete with Success.
#[derive(Debug, thiserror::Error)]
pub enum MailboxError {
    #[error("open {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("CXL_MEM_SEND_COMMAND (raw opcode {opcode:#06x}) on {path}: {source}{hint}")]
    Ioctl {
        path: String,
        opcode: u16,
        source: std::io::Error,
        hint: &'static str,
    },
    #[error("{path}: opcode {opcode:#06x} returned {} ({code:#x})", return_code_name(*code))]
    ReturnCode {
        path: String,
        opcode: u16,
        code: u32,
    },
}

/// Sends `opcode` with `input` to the memdev at `path` and returns the device's output payload
/// (at most `output_capacity` bytes, the size the device wrote). A return code other than
/// Success is an error naming it.
pub fn send_raw(
    path: &str,
    opcode: u16,
    input: &[u8],
    output_capacity: usize,
) -> Result<Vec<u8>, MailboxError> {
    let c_path = CString::new(path).map_err(|_| MailboxError::Open {
        path: path.to_owned(),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })?;
    let mut output = vec![0u8; output_capacity];
    let mut command = SendCommand {
        id: COMMAND_ID_RAW,
        raw_opcode: opcode,
        in_size: input.len() as u32,
        in_payload: input.as_ptr() as u64,
        out_size: output_capacity as u32,
        out_payload: output.as_mut_ptr() as u64,
        ..SendCommand::default()
    };
    // SAFETY: the fd is checked and closed; the command points at `input` and `output`, which
    // outlive the call, with their true sizes, so the kernel reads and writes only those.
    let result = unsafe {
        let fd = libc::open(c_path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(MailboxError::Open {
                path: path.to_owned(),
                source: std::io::Error::last_os_error(),
            });
        }
        let result = libc::ioctl(fd, SEND_COMMAND as _, &mut command as *mut SendCommand);
        let error = std::io::Error::last_os_error();
        libc::close(fd);
        if result < 0 {
            Err(error)
        } else {
            Ok(())
        }
    };
    if let Err(source) = result {
        let hint = match source.raw_os_error() {
            Some(libc::EPERM) => " (the kernel refuses this opcode on the raw path, or lacks CONFIG_CXL_MEM_RAW_COMMANDS, or is locked down)",
            Some(libc::ENOTTY) => " (no raw command support: CONFIG_CXL_MEM_RAW_COMMANDS is off)",
            Some(libc::EINVAL) => " (a payload larger than the mailbox's)",
            _ => "",
        };
        return Err(MailboxError::Ioctl {
            path: path.to_owned(),
            opcode,
            source,
            hint,
        });
    }
    if command.retval != 0 {
        return Err(MailboxError::ReturnCode {
            path: path.to_owned(),
            opcode,
            code: command.retval,
        });
    }
    output.truncate((command.out_size as usize).min(output_capacity));
    Ok(output)
}

/// The name of a mailbox return code (CXL 3.x 8.2.9.x "Command Return Codes", in the order of
/// Linux's `CMD_CMD_RC_TABLE`).
pub fn return_code_name(code: u32) -> &'static str {
    const NAMES: [&str; 31] = [
        "Success",
        "Background Command Started",
        "Invalid Input",
        "Unsupported",
        "Internal Error",
        "Retry Required",
        "Busy",
        "Media Disabled",
        "FW Transfer in Progress",
        "FW Transfer Out of Order",
        "FW Verification Failed",
        "Invalid Slot",
        "Activation Failed, FW Rolled Back",
        "Activation Failed, Cold Reset Required",
        "Invalid Handle",
        "Invalid Physical Address",
        "Inject Poison Limit Reached",
        "Permanent Media Failure",
        "Aborted",
        "Invalid Security State",
        "Incorrect Passphrase",
        "Unsupported Mailbox or CCI",
        "Invalid Payload Length",
        "Invalid Log",
        "Interrupted",
        "Unsupported Feature Version",
        "Unsupported Feature Selection Value",
        "Feature Transfer in Progress",
        "Feature Transfer Out of Order",
        "Resources Exhausted",
        "Invalid Extent List",
    ];
    NAMES
        .get(code as usize)
        .copied()
        .unwrap_or("an unknown return code")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_send_command_ioctl_number_is_the_kernels() {
        // _IOWR(0xCE, 2, struct cxl_send_command) with the struct's 48 bytes.
        assert_eq!(SEND_COMMAND, 0xC030_CE02);
    }

    #[test]
    fn return_codes_are_named_by_the_spec() {
        assert_eq!(return_code_name(3), "Unsupported");
        assert_eq!(return_code_name(0x16), "Invalid Payload Length");
        assert_eq!(return_code_name(0x1e), "Invalid Extent List");
        assert_eq!(return_code_name(0x99), "an unknown return code");
    }

    #[test]
    fn a_missing_memdev_is_an_error_naming_its_path() {
        let error = send_raw("/nonexistent/mem9", 0x4000, &[], 0x43).unwrap_err();
        assert!(
            error.to_string().starts_with("open /nonexistent/mem9: "),
            "{error}"
        );
    }
}
