//! The binary's capability commands: present a token through a memdev's mailbox, attenuate a
//! token or flip one of its bits (tokens are files of bytes, moved between hosts as they are),
//! and list the denial events the guest's kernel traced.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use cxl_lab_cap::{AddressRange, Caveat, RequesterId, Timestamp, Token};
use cxl_lab_guest::capability::{
    parse_range, parse_rights, rights_text, TracedDenial, Verdict, VerdictReply, MAX_PRESENTED_TOKEN_LEN,
    PRESENT_OPCODE,
};
use cxl_lab_guest::mailbox::{self, MailboxError};

use cxl_lab_guest::parse_number;

use crate::Failure;

/// The mailbox return code of a command the device does not implement.
const UNSUPPORTED: u32 = 3;

/// `cap present`: the device's verdict on the token in `token_file`, presented through
/// `/dev/cxl/<memdev>` (or `memdev` itself when it is a path). A refusal is [`Failure::Refused`].
pub fn present(memdev: &str, token_file: &str) -> Result<String, Failure> {
    let token = std::fs::read(token_file).map_err(|error| format!("{token_file}: {error}"))?;
    if token.is_empty() || token.len() > MAX_PRESENTED_TOKEN_LEN {
        return Err(format!(
            "{token_file}: {} bytes; a token presented is 1..={MAX_PRESENTED_TOKEN_LEN} bytes",
            token.len()
        )
        .into());
    }
    let path = memdev_path(memdev);
    let output = mailbox::send_raw(&path, PRESENT_OPCODE, &token, VerdictReply::LEN).map_err(|error| match error {
        MailboxError::ReturnCode { code: UNSUPPORTED, .. } => {
            format!("{error}: the device has no Present Capability command (stock QEMU, or a device without cap-service)")
        }
        other => other.to_string(),
    })?;
    let reply = VerdictReply::parse(&output)
        .map_err(|error| format!("{path}: the device's verdict: {error}"))?;
    match reply.verdict {
        Verdict::Granted => Ok(reply.to_string()),
        _ => Err(Failure::Refused(reply.to_string())),
    }
}

/// `cap present-all MEMDEV DIR`: presents every token file of `DIR` in name order and says how
/// many were granted and how long a present took from the ioctl to the verdict (`bench
/// capability`'s present-to-granted latency, and how it installs many grants). Any refusal is a
/// [`Failure::Refused`] naming the file.
pub fn present_all(memdev: &str, dir: &str) -> Result<String, Failure> {
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir).map_err(|error| format!("{dir}: {error}"))?.filter_map(|entry| entry.ok().map(|entry| entry.path())).collect();
    files.sort();
    let path = memdev_path(memdev);
    let mut latencies = Vec::with_capacity(files.len());
    for file in &files {
        let token = std::fs::read(file).map_err(|error| format!("{}: {error}", file.display()))?;
        let started = std::time::Instant::now();
        let output = mailbox::send_raw(&path, PRESENT_OPCODE, &token, VerdictReply::LEN).map_err(|error| error.to_string())?;
        latencies.push(started.elapsed());
        let reply = VerdictReply::parse(&output).map_err(|error| format!("{path}: the device's verdict: {error}"))?;
        if reply.verdict != Verdict::Granted {
            return Err(Failure::Refused(format!("{}: {reply}", file.display())));
        }
    }
    if latencies.is_empty() {
        return Err(format!("{dir}: no token files").into());
    }
    latencies.sort();
    let micros = |index: usize| latencies[index].as_secs_f64() * 1e6;
    Ok(format!(
        "granted {} tokens: present to verdict median_us={:.0} min_us={:.0} p90_us={:.0} max_us={:.0}",
        latencies.len(),
        micros(latencies.len() / 2),
        micros(0),
        micros(latencies.len() * 9 / 10),
        micros(latencies.len() - 1)
    ))
}

/// The character device of `memdev` (`mem0`), or `memdev` itself when it is a path.
fn memdev_path(memdev: &str) -> String {
    if memdev.contains('/') {
        memdev.to_owned()
    } else {
        format!("/dev/cxl/{memdev}")
    }
}

/// `mailbox`: any mailbox command through the raw interface, its output payload as hex (to
/// check the raw path with a command a stock device knows, such as Identify, 0x4000).
pub fn raw_command(
    memdev: &str,
    opcode: &str,
    output_bytes: &str,
    input_file: Option<&str>,
) -> Result<String, Failure> {
    let opcode = parse_number(opcode)
        .and_then(|opcode| u16::try_from(opcode).ok())
        .ok_or_else(|| format!("`{opcode}` is not a 16-bit opcode"))?;
    let output_bytes = parse_number(output_bytes)
        .ok_or_else(|| format!("`{output_bytes}` is not a byte count"))?;
    let input = match input_file {
        Some(file) => std::fs::read(file).map_err(|error| format!("{file}: {error}"))?,
        None => Vec::new(),
    };
    let output = mailbox::send_raw(&memdev_path(memdev), opcode, &input, output_bytes as usize)
        .map_err(|error| error.to_string())?;
    let hex: Vec<String> = output.iter().map(|byte| format!("{byte:02x}")).collect();
    Ok(format!(
        "opcode {opcode:#06x}: {} bytes out: {}",
        output.len(),
        hex.join(" ")
    ))
}

/// `cap attenuate`: the token in `input` with the caveats of `options` appended in their order,
/// written to `output`.
pub fn attenuate(input: &str, output: &str, options: &[&str]) -> Result<String, Failure> {
    let caveats = caveats(options)?;
    let bytes = std::fs::read(input).map_err(|error| format!("{input}: {error}"))?;
    let token = Token::decode(&bytes).map_err(|error| format!("{input}: not a token: {error}"))?;
    let attenuated = token
        .attenuate_all(&caveats)
        .map_err(|error| format!("{input}: {error}"))?;
    write_beside(output, attenuated.as_bytes())?;
    let described: Vec<String> = caveats.iter().map(describe).collect();
    Ok(format!(
        "{output}: {} bytes, {} caveats, added {}",
        attenuated.as_bytes().len(),
        attenuated.caveats().len(),
        described.join(", ")
    ))
}

/// The caveats of `cap attenuate`'s options, checked before any file is read.
fn caveats(options: &[&str]) -> Result<Vec<Caveat>, String> {
    let number = |flag: &str, text: &str| {
        parse_number(text).ok_or_else(|| format!("{flag}: `{text}` is not a number"))
    };
    let mut caveats = Vec::new();
    let mut times = 0;
    for pair in options.chunks(2) {
        let [flag, value] = pair else {
            return Err(format!("{} needs a value", pair[0]));
        };
        caveats.push(match *flag {
            "--range" => {
                let (start, length) = parse_range(value).ok_or_else(|| format!("--range: `{value}` is not START+LEN (numbers, 0x for hex)"))?;
                let range = AddressRange::new(start, length).map_err(|error| format!("--range {value}: {error}"))?;
                Caveat::Range(range)
            }
            "--rights" => Caveat::Rights(parse_rights(value).ok_or_else(|| format!("--rights: `{value}` is not r, w or rw"))?),
            "--holder" => {
                let holder = u16::try_from(number(flag, value)?).map_err(|_| format!("--holder: {value} is beyond a requester id (u16)"))?;
                Caveat::Holder(RequesterId(holder))
            }
            "--not-after-ms" | "--expires-in-ms" => {
                times += 1;
                let milliseconds = number(flag, value)?;
                Caveat::NotAfter(if *flag == "--not-after-ms" { Timestamp::from_millis(milliseconds) } else { Timestamp::now().saturating_add_millis(milliseconds) })
            }
            other => return Err(format!("unknown option `{other}` (--range START+LEN, --rights r|rw|w, --holder N, --not-after-ms MS, --expires-in-ms MS)")),
        });
    }
    if times > 1 {
        return Err("give one of --not-after-ms and --expires-in-ms, once".to_owned());
    }
    if caveats.is_empty() {
        return Err("no caveat to add: give at least one of --range, --rights, --holder, --not-after-ms, --expires-in-ms".to_owned());
    }
    Ok(caveats)
}

/// A caveat as the option that adds it reads.
fn describe(caveat: &Caveat) -> String {
    match caveat {
        Caveat::Range(range) => format!("range {:#x}+{:#x}", range.base(), range.length()),
        Caveat::Rights(rights) => format!("rights {}", rights_text(*rights)),
        Caveat::Holder(holder) => format!("holder {}", holder.0),
        Caveat::NotAfter(not_after) => format!("not-after-ms {}", not_after.as_millis()),
        Caveat::DelegationLimit(limit) => format!("delegation-limit {limit}"),
    }
}

/// `cap flip-bit`: a copy of `input` with bit `bit` (bit `bit % 8` of byte `bit / 8`) flipped.
/// A negative `bit` counts from the end (`-1` is the last bit: in the tag, so the token still
/// decodes and only the device can tell it is forged).
pub fn flip_bit(input: &str, output: &str, bit: &str) -> Result<String, Failure> {
    let mut bytes = std::fs::read(input).map_err(|error| format!("{input}: {error}"))?;
    let bits = bytes.len() as u64 * 8;
    let index = match bit.strip_prefix('-') {
        Some(from_end) => parse_number(from_end).and_then(|from_end| bits.checked_sub(from_end)),
        None => parse_number(bit).filter(|index| *index < bits),
    };
    let index = index
        .ok_or_else(|| format!("{input}: `{bit}` is not a bit of its {} bytes", bytes.len()))?;
    let byte = (index / 8) as usize;
    bytes[byte] ^= 1 << (index % 8);
    write_beside(output, &bytes)?;
    Ok(format!(
        "{output}: {input} with bit {index} (byte {byte}) flipped"
    ))
}

/// Writes `bytes` to `path` atomically: to a file beside it (0600: a token is a bearer secret),
/// synced, then renamed over it, so a reader on another host never sees half a token.
fn write_beside(path: &str, bytes: &[u8]) -> Result<(), String> {
    let temporary = format!("{path}.{}.partial", std::process::id());
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    written.map_err(|error| {
        let _ = std::fs::remove_file(&temporary);
        format!("write {path}: {error}")
    })
}

/// Where Linux mounts tracefs.
const TRACEFS: &str = "/sys/kernel/tracing";
/// The trace events `cap events` needs: the device's records, and the kernel's note of records
/// the device's log dropped.
const TRACE_EVENTS: [&str; 2] = ["cxl_generic_event", "cxl_overflow"];

/// `cap events`: enables the CXL trace events (mounting tracefs if need be) and prints each
/// denial the trace holds with a record handle above `since_handle`, then the counts.
pub fn events(since_handle: Option<&str>) -> Result<String, Failure> {
    let since_handle = since_handle
        .map(|text| {
            parse_number(text).ok_or_else(|| format!("--since-handle: `{text}` is not a number"))
        })
        .transpose()?;
    enable_tracing()?;
    let trace_path = format!("{TRACEFS}/trace");
    let trace =
        std::fs::read_to_string(&trace_path).map_err(|error| format!("{trace_path}: {error}"))?;
    summarize_trace(&trace, since_handle).map_err(|error| format!("{trace_path} {error}").into())
}

/// The lines `cap events` prints for the text of a trace: one per denial with a handle above
/// `since_handle`, then the counts. A denial record that does not parse is an error naming its
/// line.
fn summarize_trace(trace: &str, since_handle: Option<u64>) -> Result<String, String> {
    let mut lines = Vec::new();
    let mut overflows = 0;
    for (number, line) in trace.lines().enumerate() {
        if line.contains(" cxl_overflow: ") {
            overflows += 1;
        }
        let Some(parsed) = TracedDenial::parse_line(line) else {
            continue;
        };
        let denial = parsed.map_err(|error| {
            format!(
                "line {}: a denial record whose data does not parse: {error}: {line}",
                number + 1
            )
        })?;
        if since_handle.is_none_or(|since| u64::from(denial.handle) > since) {
            lines.push(denial.to_string());
        }
    }
    lines.push(format!(
        "denials events={} overflow_records={overflows}",
        lines.len()
    ));
    Ok(lines.join("\n"))
}

/// Mounts tracefs unless it is, and turns on [`TRACE_EVENTS`] unless they are on.
fn enable_tracing() -> Result<(), String> {
    if !Path::new(TRACEFS).join("trace").exists() {
        let source = c"tracefs";
        let target = c"/sys/kernel/tracing";
        // SAFETY: NUL-terminated constant strings; the result is checked.
        if unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                source.as_ptr(),
                0,
                std::ptr::null(),
            )
        } != 0
        {
            return Err(format!(
                "mount tracefs on {TRACEFS}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    for event in TRACE_EVENTS {
        let enable = format!("{TRACEFS}/events/cxl/{event}/enable");
        let state = std::fs::read_to_string(&enable)
            .map_err(|error| format!("{enable}: {error} (is the cxl_core module loaded?)"))?;
        if state.trim() != "1" {
            std::fs::write(&enable, "1").map_err(|error| format!("enable {enable}: {error}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cxl_lab_cap::Rights;

    #[test]
    fn options_become_caveats_in_their_order() {
        let parsed = caveats(&[
            "--rights",
            "r",
            "--range",
            "0x1000+4096",
            "--holder",
            "2",
            "--not-after-ms",
            "1760000000000",
        ])
        .unwrap();
        assert_eq!(
            parsed,
            [
                Caveat::Rights(Rights::READ),
                Caveat::Range(AddressRange::new(0x1000, 0x1000).unwrap()),
                Caveat::Holder(RequesterId(2)),
                Caveat::NotAfter(Timestamp::from_millis(1_760_000_000_000)),
            ]
        );
        let Caveat::NotAfter(expiry) = caveats(&["--expires-in-ms", "60000"]).unwrap()[0] else {
            panic!("not a not-after caveat")
        };
        assert!(expiry > Timestamp::now());
    }

    #[test]
    fn bad_options_are_refused_naming_the_option() {
        for (options, expected) in [
            (
                &["--range", "0x1000"][..],
                "--range: `0x1000` is not START+LEN",
            ),
            (&["--range", "0+0"], "--range 0+0: "),
            (&["--rights", "x"], "--rights: `x` is not r, w or rw"),
            (&["--holder", "70000"], "--holder: 70000 is beyond"),
            (&["--holder"], "--holder needs a value"),
            (
                &["--not-after-ms", "1", "--expires-in-ms", "1"],
                "give one of",
            ),
            (&["--size", "1"], "unknown option `--size`"),
            (&[], "no caveat to add"),
        ] {
            let error = caveats(options).unwrap_err();
            assert!(error.starts_with(expected), "{options:?}: {error}");
        }
    }

    /// A token the way the lab's service mints one (the guest never mints: it has no secret).
    fn minted() -> Token {
        let device = cxl_lab_cap::Device::new(
            cxl_lab_cap::DeviceConfig::new(cxl_lab_cap::DeviceId(1), 1 << 30),
            cxl_lab_cap::RootSecret::from_bytes([7; 32]),
        )
        .unwrap();
        device.mint(&[Caveat::Rights(Rights::READ_WRITE)]).unwrap()
    }

    #[test]
    fn attenuate_writes_the_narrowed_token_and_flip_bit_a_copy_one_bit_apart() {
        let directory =
            std::env::temp_dir().join(format!("cxl-lab-guest-cap-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let root = directory.join("root.cap");
        std::fs::write(&root, minted().as_bytes()).unwrap();
        let narrowed_path = directory.join("page.cap");
        let (root, narrowed) = (root.to_str().unwrap(), narrowed_path.to_str().unwrap());
        let line = attenuate(
            root,
            narrowed,
            &["--range", "0x0+0x1000", "--rights", "r", "--holder", "2"],
        )
        .unwrap();
        assert!(
            line.contains("4 caveats, added range 0x0+0x1000, rights r, holder 2"),
            "{line}"
        );
        let token = Token::decode(&std::fs::read(narrowed).unwrap()).unwrap();
        assert_eq!(
            token,
            minted()
                .attenuate_all(
                    &caveats(&["--range", "0+4096", "--rights", "r", "--holder", "2"]).unwrap()
                )
                .unwrap()
        );
        assert_eq!(
            std::fs::metadata(narrowed).unwrap().permissions().mode() & 0o777,
            0o600
        );

        let flipped = directory.join("forged.cap");
        flip_bit(narrowed, flipped.to_str().unwrap(), "9").unwrap();
        let (original, forged) = (
            std::fs::read(narrowed).unwrap(),
            std::fs::read(&flipped).unwrap(),
        );
        let differences: Vec<(usize, u8)> = original
            .iter()
            .zip(&forged)
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(index, (a, b))| (index, a ^ b))
            .collect();
        assert_eq!(differences, [(1, 0b10)]);
        for beyond in [
            (original.len() * 8).to_string(),
            format!("-{}", original.len() * 8 + 1),
            "x".into(),
        ] {
            assert!(
                flip_bit(narrowed, flipped.to_str().unwrap(), &beyond).is_err(),
                "{beyond}"
            );
        }
        flip_bit(narrowed, flipped.to_str().unwrap(), "-1").unwrap();
        let tag_flipped = std::fs::read(&flipped).unwrap();
        assert_eq!(tag_flipped.last().unwrap() ^ original.last().unwrap(), 0x80);
        assert!(
            Token::decode(&tag_flipped).is_ok(),
            "a flipped tag bit still decodes"
        );

        let Err(Failure::Error(not_a_token)) = attenuate(narrowed, narrowed, &["--garbage", "1"])
        else {
            panic!("a bad option passed")
        };
        assert!(not_a_token.starts_with("unknown option"), "{not_a_token}");
        std::fs::write(&flipped, b"\0\0").unwrap();
        let Err(Failure::Error(garbage)) =
            attenuate(flipped.to_str().unwrap(), narrowed, &["--rights", "r"])
        else {
            panic!("garbage decoded")
        };
        assert!(garbage.contains("not a token"), "{garbage}");
        std::fs::remove_dir_all(directory).unwrap();
    }

    #[test]
    fn a_trace_summary_lists_denials_after_the_handle_and_counts_overflows() {
        let denial = |handle: u16, dpa: u64, denials: u64| {
            let event = cxl_lab_guest::capability::DenialEvent {
                dpa,
                length: 8,
                access: cxl_lab_cap::AccessKind::Read,
                requester: RequesterId(2),
                denials,
            };
            let hex: Vec<String> = event
                .encode()
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect();
            format!(
                "  cxl-lab-guest-99 [000] ..... 5.0: cxl_generic_event: memdev=mem0 host=0000:0d:00.0 serial=200 \
                 log=Informational : time=1 uuid={} len=128 flags='' handle={handle:x} related_handle=0 \
                 maint_op_class=0 maint_op_sub_class=0 ld_id=0 head_id=0 : {}",
                cxl_lab_guest::capability::DENIAL_EVENT_UUID,
                hex.join(" ")
            )
        };
        let overflow =
            "  irq/40-84 [000] ..... 6.0: cxl_overflow: memdev=mem0 host=0000:0d:00.0 serial=200: \
                        log=Informational : 2 records from 1 to 2";
        let trace = [
            "# tracer: nop",
            &denial(1, 0x1000, 1),
            &denial(2, 0x2008, 2),
            overflow,
            &denial(0x11, 0x3000, 3),
        ]
        .join("\n");
        assert_eq!(
            summarize_trace(&trace, None).unwrap(),
            "denial memdev=mem0 dpa=0x1000 length=8 access=read requester=2 denials=1 handle=0x1\n\
             denial memdev=mem0 dpa=0x2008 length=8 access=read requester=2 denials=2 handle=0x2\n\
             denial memdev=mem0 dpa=0x3000 length=8 access=read requester=2 denials=3 handle=0x11\n\
             denials events=3 overflow_records=1"
        );
        assert_eq!(
            summarize_trace(&trace, Some(2)).unwrap(),
            "denial memdev=mem0 dpa=0x3000 length=8 access=read requester=2 denials=3 handle=0x11\n\
             denials events=1 overflow_records=1"
        );
        let broken = format!(
            "{trace}\n{}",
            denial(0x12, 0, 4).replace(" 00 00 02 00", " 07 00 02 00")
        );
        let error = summarize_trace(&broken, None).unwrap_err();
        assert!(
            error.starts_with("line 6: a denial record whose data does not parse"),
            "{error}"
        );
    }

    use std::os::unix::fs::PermissionsExt;
}
