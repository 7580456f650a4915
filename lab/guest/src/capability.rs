//! What the capability device, its host service and the guest agree on (`/work` spec of issue 13,
//! `docs/capability-lab.md`): the Present Capability mailbox command, the 32-byte verdict it
//! returns, and the CXL event record the device logs for each denied access, as bytes and as the
//! line Linux traces for it (`cxl_generic_event`).
//!
//! All integers are little-endian. The host service encodes verdicts, the guest parses them; the
//! device writes denial records, the guest parses them from the kernel's trace.

use cxl_lab_cap::{AccessKind, RequesterId, Rights};

/// The vendor-specific mailbox opcode (CXL's vendor range is C000h-FFFFh) by which a host
/// presents a token: input the token bytes, output a [`VerdictReply`].
pub const PRESENT_OPCODE: u16 = 0xC000;

/// Bytes of a token the device accepts in one Present Capability command.
pub const MAX_PRESENTED_TOKEN_LEN: usize = 1024;

/// What the device answered to a presented token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Verdict {
    Granted = 0,
    Malformed = 1,
    /// The tag does not verify: forged or altered.
    BadTag = 2,
    WrongDevice = 3,
    WrongEpoch = 4,
    Revoked = 5,
    Expired = 6,
    WrongHolder = 7,
    /// The token's ranges are empty or lie beyond the device.
    NoAddress = 8,
    TableFull = 9,
    /// The device could not reach the capability service.
    ServiceUnavailable = 10,
    /// Refused for a reason none of the others names.
    Refused = 11,
}

impl Verdict {
    /// Every verdict, in code order.
    pub const ALL: [Verdict; 12] = [
        Verdict::Granted,
        Verdict::Malformed,
        Verdict::BadTag,
        Verdict::WrongDevice,
        Verdict::WrongEpoch,
        Verdict::Revoked,
        Verdict::Expired,
        Verdict::WrongHolder,
        Verdict::NoAddress,
        Verdict::TableFull,
        Verdict::ServiceUnavailable,
        Verdict::Refused,
    ];

    /// The stable kebab-case name that the guest program prints and suites match.
    pub const fn name(self) -> &'static str {
        match self {
            Verdict::Granted => "granted",
            Verdict::Malformed => "malformed",
            Verdict::BadTag => "bad-tag",
            Verdict::WrongDevice => "wrong-device",
            Verdict::WrongEpoch => "wrong-epoch",
            Verdict::Revoked => "revoked",
            Verdict::Expired => "expired",
            Verdict::WrongHolder => "wrong-holder",
            Verdict::NoAddress => "no-address",
            Verdict::TableFull => "table-full",
            Verdict::ServiceUnavailable => "service-unavailable",
            Verdict::Refused => "refused",
        }
    }

    /// The verdict of a name as [`Verdict::name`] gives it.
    pub fn from_name(name: &str) -> Option<Verdict> {
        Verdict::ALL
            .into_iter()
            .find(|verdict| verdict.name() == name)
    }
}

impl From<Verdict> for u8 {
    fn from(verdict: Verdict) -> u8 {
        verdict as u8
    }
}

impl TryFrom<u8> for Verdict {
    type Error = ProtocolError;

    fn try_from(code: u8) -> Result<Verdict, ProtocolError> {
        Verdict::ALL
            .get(usize::from(code))
            .copied()
            .ok_or(ProtocolError::UnknownVerdict(code))
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.name())
    }
}

/// Why bytes are not a verdict or a denial record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("{what} is {found} bytes, expected {expected}")]
    Length {
        what: &'static str,
        found: usize,
        expected: usize,
    },
    #[error("verdict code {0} is not one of the spec's (0..=11)")]
    UnknownVerdict(u8),
    #[error("verdict rights byte {0:#04x} has bits beyond read (bit 0) and write (bit 1)")]
    UndefinedRights(u8),
    #[error("{what} at byte {offset} is {value:#x}, must be 0")]
    Reserved {
        what: &'static str,
        offset: usize,
        value: u64,
    },
    #[error("denial access byte {0} is neither 0 (read) nor 1 (write)")]
    UnknownAccess(u8),
    #[error("`{0}` is not two-digit hex bytes separated by spaces")]
    Hex(String),
}

/// The 32-byte output payload of Present Capability.
///
/// A refusal carries only the verdict and the requester; rights, range and expiry are zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerdictReply {
    pub verdict: Verdict,
    /// What the grant allows (granted only).
    pub rights: Rights,
    /// The requester the device presented the token for (set by QEMU, not by the guest).
    pub requester: RequesterId,
    /// Granted device physical address range: first byte and length (granted only).
    pub start: u64,
    pub length: u64,
    /// The last Unix millisecond the grant admits; 0 = never expires.
    pub expires_ms: u64,
}

impl VerdictReply {
    /// Bytes of the encoding.
    pub const LEN: usize = 32;

    /// A refusal: `verdict` with everything but the requester zero.
    pub fn refusal(verdict: Verdict, requester: RequesterId) -> VerdictReply {
        VerdictReply {
            verdict,
            rights: Rights::NONE,
            requester,
            start: 0,
            length: 0,
            expires_ms: 0,
        }
    }

    /// The wire encoding (offset 0 verdict, 1 rights, 2 requester, 4 reserved, 8 start,
    /// 16 length, 24 expires_ms).
    pub fn encode(&self) -> [u8; VerdictReply::LEN] {
        let mut bytes = [0u8; VerdictReply::LEN];
        bytes[0] = self.verdict.into();
        bytes[1] = self.rights.bits();
        bytes[2..4].copy_from_slice(&self.requester.0.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.start.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.length.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.expires_ms.to_le_bytes());
        bytes
    }

    /// Parses exactly [`VerdictReply::LEN`] bytes. A nonzero reserved field is an error: both
    /// ends are the lab's, so it can only mean they disagree on the layout.
    pub fn parse(bytes: &[u8]) -> Result<VerdictReply, ProtocolError> {
        let bytes: &[u8; VerdictReply::LEN] =
            bytes.try_into().map_err(|_| ProtocolError::Length {
                what: "a verdict",
                found: bytes.len(),
                expected: VerdictReply::LEN,
            })?;
        let reserved = u32_at(bytes, 4);
        if reserved != 0 {
            return Err(ProtocolError::Reserved {
                what: "the verdict's reserved field",
                offset: 4,
                value: reserved.into(),
            });
        }
        Ok(VerdictReply {
            verdict: Verdict::try_from(bytes[0])?,
            rights: Rights::from_bits(bytes[1])
                .map_err(|_| ProtocolError::UndefinedRights(bytes[1]))?,
            requester: RequesterId(u16_at(bytes, 2)),
            start: u64_at(bytes, 8),
            length: u64_at(bytes, 16),
            expires_ms: u64_at(bytes, 24),
        })
    }
}

impl std::fmt::Display for VerdictReply {
    /// `granted requester=2 range=0x0+0x1000 rights=r expires_ms=0`, or
    /// `refused bad-tag requester=2`: the line `cxl-lab-guest cap present` prints.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let requester = self.requester.0;
        match self.verdict {
            Verdict::Granted => write!(
                formatter,
                "granted requester={requester} range={:#x}+{:#x} rights={} expires_ms={}",
                self.start,
                self.length,
                rights_text(self.rights),
                self.expires_ms
            ),
            refused => write!(formatter, "refused {refused} requester={requester}"),
        }
    }
}

/// Rights as the guest program writes and reads them: `r`, `w`, `rw`, or `-` for none.
pub fn rights_text(rights: Rights) -> &'static str {
    match rights.bits() {
        0b01 => "r",
        0b10 => "w",
        0b11 => "rw",
        _ => "-",
    }
}

/// A range of device addresses written `START+LENGTH`, each a number (`0x` for hex), as the
/// guest program's `--range` and `lab cap mint --range` take it.
pub fn parse_range(text: &str) -> Option<(u64, u64)> {
    let (start, length) = text.split_once('+')?;
    Some((crate::parse_number(start)?, crate::parse_number(length)?))
}

/// Rights from `r`, `w` or `rw` (the inverse of [`rights_text`] for rights that allow anything).
pub fn parse_rights(text: &str) -> Option<Rights> {
    match text {
        "r" => Some(Rights::READ),
        "w" => Some(Rights::WRITE),
        "rw" => Some(Rights::READ_WRITE),
        _ => None,
    }
}

/// The event record UUID of a denial, as Linux prints it (`%pUb`: the record's 16 bytes in
/// order).
pub const DENIAL_EVENT_UUID: &str = "5c1e7a0c-6b8f-4d2a-9c3e-0ca9ab1e0001";

/// [`DENIAL_EVENT_UUID`] as the 16 bytes of the event record header, in record order.
pub const DENIAL_EVENT_UUID_BYTES: [u8; 16] = [
    0x5c, 0x1e, 0x7a, 0x0c, 0x6b, 0x8f, 0x4d, 0x2a, 0x9c, 0x3e, 0x0c, 0xa9, 0xab, 0x1e, 0x00, 0x01,
];

/// Bytes of a CXL event record's data (`CXL_EVENT_RECORD_DATA_LENGTH`).
pub const EVENT_DATA_LEN: usize = 0x50;

/// Bytes of the denial data that carry fields; the rest of the record's data is zero.
const DENIAL_FIELDS_LEN: usize = 24;

/// One denied access, from the data of the device's event record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DenialEvent {
    /// Device physical address of the access.
    pub dpa: u64,
    pub length: u32,
    pub access: AccessKind,
    pub requester: RequesterId,
    /// The device's denials so far, this one included.
    pub denials: u64,
}

impl DenialEvent {
    /// The record data (offset 0 dpa, 8 length, 12 access, 13 reserved, 14 requester,
    /// 16 denials, zero to the end).
    pub fn encode(&self) -> [u8; EVENT_DATA_LEN] {
        let mut data = [0u8; EVENT_DATA_LEN];
        data[0..8].copy_from_slice(&self.dpa.to_le_bytes());
        data[8..12].copy_from_slice(&self.length.to_le_bytes());
        data[12] = match self.access {
            AccessKind::Read => 0,
            AccessKind::Write => 1,
        };
        data[14..16].copy_from_slice(&self.requester.0.to_le_bytes());
        data[16..24].copy_from_slice(&self.denials.to_le_bytes());
        data
    }

    /// Parses exactly [`EVENT_DATA_LEN`] bytes; reserved bytes must be zero (a layout
    /// disagreement shows as an error, not as a wrong number).
    pub fn parse(data: &[u8]) -> Result<DenialEvent, ProtocolError> {
        let data: &[u8; EVENT_DATA_LEN] = data.try_into().map_err(|_| ProtocolError::Length {
            what: "a denial record's data",
            found: data.len(),
            expected: EVENT_DATA_LEN,
        })?;
        let reserved = std::iter::once(13)
            .chain(DENIAL_FIELDS_LEN..EVENT_DATA_LEN)
            .find(|&offset| data[offset] != 0);
        if let Some(offset) = reserved {
            return Err(ProtocolError::Reserved {
                what: "a denial record's reserved byte",
                offset,
                value: data[offset].into(),
            });
        }
        let access = match data[12] {
            0 => AccessKind::Read,
            1 => AccessKind::Write,
            other => return Err(ProtocolError::UnknownAccess(other)),
        };
        Ok(DenialEvent {
            dpa: u64_at(data, 0),
            length: u32_at(data, 8),
            access,
            requester: RequesterId(u16_at(data, 14)),
            denials: u64_at(data, 16),
        })
    }
}

/// A denial as the guest's kernel traced it: the event and which memdev logged it under which
/// record handle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TracedDenial {
    pub memdev: String,
    /// The record's handle in the device's event log (`handle=` of the trace line, hex).
    pub handle: u16,
    pub event: DenialEvent,
}

impl TracedDenial {
    /// The denial in one line of `/sys/kernel/tracing/trace`: `None` for any line that is not a
    /// `cxl_generic_event` with [`DENIAL_EVENT_UUID`]; an error for one that is but whose data
    /// does not parse. The line, as `CXL_EVT_TP_printk` formats it:
    /// `<task>-<pid> [cpu] <flags> <time>: cxl_generic_event: memdev=mem0 host=... : time=...
    /// uuid=<uuid> len=128 flags='' handle=1 ... head_id=0 : <80 hex bytes>`.
    pub fn parse_line(line: &str) -> Option<Result<TracedDenial, ProtocolError>> {
        let (_, fields) = line.split_once("cxl_generic_event: ")?;
        if field(fields, "uuid")? != DENIAL_EVENT_UUID {
            return None;
        }
        let parsed = (|| {
            let hex_field = |name: &str| -> Result<u16, ProtocolError> {
                let text = field(fields, name).unwrap_or_default();
                u16::from_str_radix(text, 16)
                    .map_err(|_| ProtocolError::Hex(format!("{name}={text}")))
            };
            let (_, data) = fields
                .rsplit_once(" : ")
                .ok_or_else(|| ProtocolError::Hex(fields.to_owned()))?;
            Ok(TracedDenial {
                memdev: field(fields, "memdev").unwrap_or_default().to_owned(),
                handle: hex_field("handle")?,
                event: DenialEvent::parse(&parse_hex_bytes(data)?)?,
            })
        })();
        Some(parsed)
    }
}

impl std::fmt::Display for TracedDenial {
    /// `denial memdev=mem0 dpa=0x2000 length=8 access=read requester=2 denials=1 handle=0x1`:
    /// the line `cxl-lab-guest cap events` prints.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let event = &self.event;
        let access = match event.access {
            AccessKind::Read => "read",
            AccessKind::Write => "write",
        };
        write!(
            formatter,
            "denial memdev={} dpa={:#x} length={} access={access} requester={} denials={} handle={:#x}",
            self.memdev, event.dpa, event.length, event.requester.0, event.denials, self.handle
        )
    }
}

/// The value of `name=value` among space-separated fields.
fn field<'line>(fields: &'line str, name: &str) -> Option<&'line str> {
    fields
        .split(' ')
        .find_map(|word| word.strip_prefix(name)?.strip_prefix('='))
}

/// Bytes from the kernel's `__print_hex` output: two-digit hex, separated by single spaces.
pub fn parse_hex_bytes(text: &str) -> Result<Vec<u8>, ProtocolError> {
    text.split_ascii_whitespace()
        .map(|pair| {
            (pair.len() == 2)
                .then(|| u8::from_str_radix(pair, 16).ok())
                .flatten()
                .ok_or_else(|| ProtocolError::Hex(text.to_owned()))
        })
        .collect()
}

fn u16_at(bytes: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes(bytes[offset..offset + 2].try_into().expect("2 bytes"))
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(bytes[offset..offset + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_codes_and_names_round_trip_and_follow_the_spec() {
        for (code, verdict) in Verdict::ALL.into_iter().enumerate() {
            assert_eq!(u8::from(verdict), code as u8);
            assert_eq!(Verdict::try_from(code as u8), Ok(verdict));
            assert_eq!(Verdict::from_name(verdict.name()), Some(verdict));
        }
        assert_eq!(Verdict::try_from(2).unwrap().name(), "bad-tag");
        assert_eq!(Verdict::try_from(10).unwrap().name(), "service-unavailable");
        assert_eq!(
            Verdict::try_from(12),
            Err(ProtocolError::UnknownVerdict(12))
        );
        assert_eq!(Verdict::from_name("granted "), None);
    }

    #[test]
    fn a_verdict_encodes_at_the_spec_offsets_and_parses_back() {
        let granted = VerdictReply {
            verdict: Verdict::Granted,
            rights: Rights::READ,
            requester: RequesterId(2),
            start: 0x1000,
            length: 0x2000,
            expires_ms: 1_760_000_000_123,
        };
        let bytes = granted.encode();
        assert_eq!(bytes[..4], [0, 1, 2, 0]);
        assert_eq!(bytes[4..8], [0; 4]);
        assert_eq!(bytes[8..16], 0x1000u64.to_le_bytes());
        assert_eq!(bytes[16..24], 0x2000u64.to_le_bytes());
        assert_eq!(bytes[24..], 1_760_000_000_123u64.to_le_bytes());
        assert_eq!(VerdictReply::parse(&bytes), Ok(granted));
        assert_eq!(
            granted.to_string(),
            "granted requester=2 range=0x1000+0x2000 rights=r expires_ms=1760000000123"
        );
        let refused = VerdictReply::refusal(Verdict::BadTag, RequesterId(0x0102));
        assert_eq!(refused.encode()[..4], [2, 0, 2, 1]);
        assert_eq!(refused.to_string(), "refused bad-tag requester=258");
    }

    #[test]
    fn verdict_parse_rejects_what_the_spec_does_not_allow() {
        let good = VerdictReply::refusal(Verdict::Expired, RequesterId(1)).encode();
        assert_eq!(
            VerdictReply::parse(&good[..31]),
            Err(ProtocolError::Length {
                what: "a verdict",
                found: 31,
                expected: 32
            })
        );
        let mut unknown = good;
        unknown[0] = 12;
        assert_eq!(
            VerdictReply::parse(&unknown),
            Err(ProtocolError::UnknownVerdict(12))
        );
        let mut rights = good;
        rights[1] = 0b100;
        assert_eq!(
            VerdictReply::parse(&rights),
            Err(ProtocolError::UndefinedRights(4))
        );
        let mut reserved = good;
        reserved[6] = 1;
        assert!(matches!(
            VerdictReply::parse(&reserved),
            Err(ProtocolError::Reserved { offset: 4, .. })
        ));
    }

    #[test]
    fn rights_text_round_trips() {
        for rights in [Rights::READ, Rights::WRITE, Rights::READ_WRITE] {
            assert_eq!(parse_rights(rights_text(rights)), Some(rights));
        }
        assert_eq!(rights_text(Rights::NONE), "-");
        assert_eq!(parse_rights("wr"), None);
    }

    #[test]
    fn the_uuid_text_and_bytes_agree() {
        let hex: String = DENIAL_EVENT_UUID.chars().filter(|c| *c != '-').collect();
        let bytes: Vec<u8> = (0..16)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        assert_eq!(bytes, DENIAL_EVENT_UUID_BYTES);
    }

    fn write_denial() -> DenialEvent {
        DenialEvent {
            dpa: 0x2008,
            length: 8,
            access: AccessKind::Write,
            requester: RequesterId(2),
            denials: 5,
        }
    }

    #[test]
    fn a_denial_record_encodes_at_the_spec_offsets_and_parses_back() {
        let data = write_denial().encode();
        assert_eq!(data[..8], 0x2008u64.to_le_bytes());
        assert_eq!(data[8..12], 8u32.to_le_bytes());
        assert_eq!(data[12..16], [1, 0, 2, 0]);
        assert_eq!(data[16..24], 5u64.to_le_bytes());
        assert!(data[24..].iter().all(|byte| *byte == 0));
        assert_eq!(DenialEvent::parse(&data), Ok(write_denial()));
    }

    #[test]
    fn denial_parse_rejects_wrong_lengths_access_and_reserved_bytes() {
        let data = write_denial().encode();
        assert!(matches!(
            DenialEvent::parse(&data[..0x4f]),
            Err(ProtocolError::Length { found: 0x4f, .. })
        ));
        let mut access = data;
        access[12] = 2;
        assert_eq!(
            DenialEvent::parse(&access),
            Err(ProtocolError::UnknownAccess(2))
        );
        let mut tail = data;
        tail[0x4f] = 1;
        assert!(matches!(
            DenialEvent::parse(&tail),
            Err(ProtocolError::Reserved { offset: 0x4f, .. })
        ));
    }

    /// A `cxl_generic_event` line as Linux 7.3 printed it in a lab guest (`cxl_test`'s
    /// `event_trigger`, `/sys/kernel/tracing/trace`), verbatim.
    const REAL_GENERIC_LINE: &str = "              sh-141     [000] .....   395.843040: cxl_generic_event: \
memdev=mem11 host=cxl_mem.0 serial=1 log=Fatal : time=0 uuid=abcdefeb-ba11-ba5e-a55a-a55aa5a55aa5 len=128 \
flags='HARDWARE_REPLACEMENT_NEEDED' handle=1 related_handle=b6a5 maint_op_class=0 maint_op_sub_class=0 ld_id=0 \
head_id=0 : de ad be ef 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00";
    const REAL_DATA: &str = "de ad be ef 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00";

    /// [`REAL_GENERIC_LINE`] with another uuid, handle 0x1a and other data (as `__print_hex`
    /// writes it: two-digit hex separated by spaces).
    fn trace_line(uuid: &str, data: &[u8]) -> String {
        let hex: Vec<String> = data.iter().map(|byte| format!("{byte:02x}")).collect();
        REAL_GENERIC_LINE
            .replace("abcdefeb-ba11-ba5e-a55a-a55aa5a55aa5", uuid)
            .replace(" handle=1 ", " handle=1a ")
            .replace(REAL_DATA, &hex.join(" "))
    }

    #[test]
    fn a_traced_denial_line_parses_to_its_memdev_handle_and_event() {
        let line = trace_line(DENIAL_EVENT_UUID, &write_denial().encode());
        let traced = TracedDenial::parse_line(&line)
            .expect("our uuid")
            .expect("parses");
        assert_eq!(
            traced,
            TracedDenial {
                memdev: "mem11".into(),
                handle: 0x1a,
                event: write_denial()
            }
        );
    }

    #[test]
    fn trace_lines_of_other_events_are_not_denials() {
        let other_uuid = trace_line(
            "fbcd0a77-c260-417f-85a9-088b1621eba6",
            &write_denial().encode(),
        );
        assert!(TracedDenial::parse_line(&other_uuid).is_none());
        assert!(TracedDenial::parse_line(REAL_GENERIC_LINE).is_none());
        let media = "kworker/1:1-40 [001] ..... 9.1: cxl_general_media: memdev=mem0 host=0000:0d:00.0 serial=0 \
                     log=Informational : time=0 uuid=fbcd0a77-c260-417f-85a9-088b1621eba6 len=128 flags='' handle=1 \
                     related_handle=0 maint_op_class=0 maint_op_sub_class=0 ld_id=0 head_id=0 : dpa=1000 ...";
        assert!(TracedDenial::parse_line(media).is_none());
        assert!(TracedDenial::parse_line("# tracer: nop").is_none());
    }

    #[test]
    fn a_denial_line_with_bad_data_is_an_error_not_skipped() {
        let short = trace_line(DENIAL_EVENT_UUID, &[0u8; 16]);
        assert!(matches!(
            TracedDenial::parse_line(&short),
            Some(Err(ProtocolError::Length { found: 16, .. }))
        ));
        let garbled =
            trace_line(DENIAL_EVENT_UUID, &write_denial().encode()).replace(" 08 ", " 8 ");
        assert!(matches!(
            TracedDenial::parse_line(&garbled),
            Some(Err(ProtocolError::Hex(_)))
        ));
    }

    #[test]
    fn hex_bytes_parse_as_print_hex_writes_them() {
        assert_eq!(parse_hex_bytes("00 ff 1a"), Ok(vec![0, 0xff, 0x1a]));
        assert!(parse_hex_bytes("0 ff").is_err());
        assert!(parse_hex_bytes("zz").is_err());
    }
}
