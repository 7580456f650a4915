//! The capability service of one memory backend: the one party that holds its root secret.
//!
//! Started by the lab's supervisor before the machines and stopped with it. Two unix sockets in
//! the lab's private (0700) run directory:
//! - `device.sock`: the capability-checking devices (QEMU) pass on a token a host presented,
//!   with the requester id QEMU's command line gave that port; the service verifies it
//!   (`lab/cap`), installs the grant, republishes the grant table and answers the verdict;
//! - `owner.sock`: the lab's owner (`lab cap mint|revoke|grants`), JSON lines ([`super::owner`]).
//!
//! The root secret is new each time the service starts (0600 in the lab's secrets directory):
//! tokens, revocations and token ids live exactly as long as the service, so a restart cannot
//! bring a revoked token back.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use cxl_lab_cap::{
    AddressRange, Caveat, Device, DeviceConfig, DeviceId, InstallError, InstalledGrant, RequesterId, Rights, RootSecret, Timestamp, Token, VerifyError,
};
use cxl_lab_guest::capability::{Verdict, VerdictReply};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};

use super::owner::{GrantView, OwnerReply, OwnerRequest};
use super::table::{self, GrantTableFile, DEFAULT_CAPACITY};
use crate::layout::CapabilityFiles;
use crate::model::topology::CapabilityRequester;

/// Magic and version of a device's request (`"CXCP"`, 1).
pub const REQUEST_MAGIC: u32 = 0x5043_5843;
pub const REQUEST_VERSION: u16 = 1;
/// Longest token a device passes on (the mailbox command's limit).
pub const TOKEN_MAX: usize = 1024;
/// Grants one requester may hold (lab/cap's default is 8, a hardware table's size; the lab's
/// table is a file of [`DEFAULT_CAPACITY`] entries, and the benchmark installs 10,000).
pub const MAX_GRANTS_PER_REQUESTER: usize = 16_384;
/// How long one connection may take to send its request.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// What one service needs: the backend it guards, where its files are, and who may present.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceConfig {
    pub backend: String,
    pub capacity_bytes: u64,
    pub files: CapabilityFiles,
    pub secret: PathBuf,
    /// Every (host, device) port that uses the backend, with the requester id QEMU gives it.
    pub requesters: Vec<CapabilityRequester>,
}

/// A running service; dropping it stops it and removes its sockets.
pub struct RunningService {
    files: CapabilityFiles,
    stopping: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl RunningService {
    /// Creates the secret, the empty grant table and the sockets, and serves both on threads of
    /// their own. The table exists before this returns: a device maps it when QEMU starts.
    pub fn start(config: &ServiceConfig) -> anyhow::Result<RunningService> {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&config.files.dir)?;
        let shared = Arc::new(Shared::new(config)?);
        let stopping = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (socket, serve) in [(config.files.device_socket(), serve_device as fn(&Shared, UnixStream) -> anyhow::Result<()>), (config.files.owner_socket(), serve_owner)] {
            let _ = std::fs::remove_file(&socket);
            let listener = UnixListener::bind(&socket).with_context(|| format!("binding {}", socket.display()))?;
            let (shared, stopping) = (Arc::clone(&shared), Arc::clone(&stopping));
            threads.push(std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stopping.load(Ordering::Acquire) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        if let Err(error) = stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(anyhow::Error::from).and_then(|()| serve(&shared, stream)) {
                            shared.log(&format!("{}: {error:#}", socket.display()));
                        }
                    }
                }
            }));
        }
        Ok(RunningService { files: config.files.clone(), stopping, threads })
    }
}

impl Drop for RunningService {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Release);
        for socket in [self.files.device_socket(), self.files.owner_socket()] {
            // Wakes the thread blocked in accept, which then sees `stopping`.
            let _ = UnixStream::connect(&socket);
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        for socket in [self.files.device_socket(), self.files.owner_socket()] {
            let _ = std::fs::remove_file(socket);
        }
    }
}

/// What the threads share.
struct Shared {
    backend: String,
    device: Device,
    table: Mutex<GrantTableFile>,
    requesters: Vec<CapabilityRequester>,
    log: Mutex<std::fs::File>,
}

impl Shared {
    fn new(config: &ServiceConfig) -> anyhow::Result<Shared> {
        let mut secret = zeroize::Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(secret.as_mut());
        write_private(&config.secret, secret.as_ref())?;
        let mut device_config = DeviceConfig::new(device_id(&config.backend), config.capacity_bytes);
        device_config.policy.max_grants_per_requester = MAX_GRANTS_PER_REQUESTER;
        let device = Device::new(device_config, RootSecret::from_bytes(*secret)).with_context(|| format!("the capability device of `{}`", config.backend))?;
        let table = GrantTableFile::create(&config.files.grant_table(), DEFAULT_CAPACITY)?;
        let log = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(config.files.log())?;
        Ok(Shared { backend: config.backend.clone(), device, table: Mutex::new(table), requesters: config.requesters.clone(), log: Mutex::new(log) })
    }

    fn log(&self, line: &str) {
        if let Ok(mut log) = self.log.lock() {
            let _ = writeln!(log, "{} {line}", humantime::format_rfc3339_millis(std::time::SystemTime::now()));
        }
    }

    /// A token a device passed on: verified for that device's requester id and installed.
    fn present(&self, requester: u16, token: &[u8]) -> VerdictReply {
        let who = self.requester_name(requester);
        if !self.requesters.iter().any(|known| known.requester == requester) {
            self.log(&format!("present from unknown requester {requester}: refused"));
            return VerdictReply::refusal(Verdict::Refused, RequesterId(requester));
        }
        let reply = match self.device.install_grant(token, RequesterId(requester), Timestamp::now()) {
            Ok(grant) => match self.republish() {
                Ok(()) => granted(requester, &grant),
                Err(error) => {
                    self.log(&format!("publishing the grant table: {error:#}"));
                    VerdictReply::refusal(Verdict::TableFull, RequesterId(requester))
                }
            },
            Err(InstallError::TableFull { .. }) => VerdictReply::refusal(Verdict::TableFull, RequesterId(requester)),
            Err(InstallError::Verify(error)) => VerdictReply::refusal(verdict_of(&error), RequesterId(requester)),
        };
        self.log(&format!("present from {who}: {}", reply.verdict.name()));
        reply
    }

    /// Writes every installed grant of every requester into the table, expired ones dropped.
    fn republish(&self) -> anyhow::Result<()> {
        self.device.purge_expired_grants(Timestamp::now());
        let grants: Vec<(RequesterId, InstalledGrant)> = self.installed().map(|(known, grant)| (RequesterId(known.requester), grant)).collect();
        self.table.lock().map_err(|_| anyhow::anyhow!("the grant table's lock is poisoned"))?.publish(&table::segments(&grants))
    }

    /// Every installed grant, with the port that holds it.
    fn installed(&self) -> impl Iterator<Item = (&CapabilityRequester, InstalledGrant)> {
        self.requesters.iter().flat_map(|known| self.device.installed_grants(RequesterId(known.requester)).into_iter().map(move |grant| (known, grant)))
    }

    fn requester_name(&self, requester: u16) -> String {
        self.requesters.iter().find(|known| known.requester == requester).map_or_else(|| format!("requester {requester}"), |known| format!("{}/{} (requester {requester})", known.host, known.device))
    }

    fn owner(&self, request: OwnerRequest) -> anyhow::Result<OwnerReply> {
        match request {
            OwnerRequest::Mint { start, length, rights, holder, expires_in_ms } => {
                let mut caveats = vec![Caveat::Range(AddressRange::new(start, length)?), Caveat::Rights(Rights::from_bits(rights)?)];
                if let Some(holder) = holder {
                    caveats.push(Caveat::Holder(RequesterId(holder)));
                }
                if let Some(expires_in_ms) = expires_in_ms {
                    caveats.push(Caveat::NotAfter(Timestamp::now().saturating_add_millis(expires_in_ms)));
                }
                let token = self.device.mint(&caveats)?;
                let identifier = token.identifier();
                self.log(&format!("minted token {} of epoch {}", identifier.token_id.0, identifier.epoch.0));
                Ok(OwnerReply::Minted { token: hex(token.as_bytes()), epoch: identifier.epoch.0, token_id: identifier.token_id.0 })
            }
            OwnerRequest::Revoke { token } => {
                let bytes = unhex(&token).context("the token is not hex")?;
                let identifier = *Token::decode(&bytes)?.identifier();
                let revocation = self.device.revoke_token(identifier.epoch, identifier.token_id)?;
                self.republish()?;
                self.log(&format!("revoked token {} of epoch {}: {revocation:?}", identifier.token_id.0, identifier.epoch.0));
                Ok(OwnerReply::Revoked { epoch: identifier.epoch.0, token_id: identifier.token_id.0, outcome: format!("{revocation:?}") })
            }
            OwnerRequest::Grants => {
                self.device.purge_expired_grants(Timestamp::now());
                let grants = self.installed().map(|(known, grant)| GrantView::of(known, &grant)).collect();
                Ok(OwnerReply::Grants { backend: self.backend.clone(), epoch: self.device.epoch().0, grants })
            }
        }
    }
}

fn granted(requester: u16, grant: &InstalledGrant) -> VerdictReply {
    VerdictReply {
        verdict: Verdict::Granted,
        rights: grant.rights,
        requester: RequesterId(requester),
        start: grant.range.base(),
        length: grant.range.length(),
        expires_ms: grant.expires_after.map_or(0, |last| last.as_millis().max(1)),
    }
}

/// The verdict code a device returns for a refusal (`docs/capability-lab.md`).
pub fn verdict_of(error: &VerifyError) -> Verdict {
    match error {
        VerifyError::Decode(_) | VerifyError::TokenTooLarge { .. } | VerifyError::TooManyCaveats { .. } | VerifyError::MissingRequiredCaveat(_) | VerifyError::DelegationLimitExceeded { .. } => Verdict::Malformed,
        VerifyError::BadTag | VerifyError::AlgorithmNotAccepted(_) => Verdict::BadTag,
        VerifyError::WrongDevice { .. } => Verdict::WrongDevice,
        VerifyError::WrongEpoch { .. } => Verdict::WrongEpoch,
        VerifyError::Revoked(_) => Verdict::Revoked,
        VerifyError::Expired { .. } => Verdict::Expired,
        VerifyError::WrongHolder(_) => Verdict::WrongHolder,
        VerifyError::RangeBeyondDevice { .. } | VerifyError::NoAddressGranted => Verdict::NoAddress,
        VerifyError::EmptyRequest | VerifyError::RequestOverflow { .. } | VerifyError::RequestBeyondDevice { .. } | VerifyError::OutsideGrantedRange { .. } | VerifyError::RightsNotGranted(_) => Verdict::Refused,
    }
}

/// A device's request: header, then the token; the verdict goes back on the same connection.
fn serve_device(shared: &Shared, mut stream: UnixStream) -> anyhow::Result<()> {
    let mut header = [0u8; 12];
    stream.read_exact(&mut header)?;
    let magic = u32::from_le_bytes(header[0..4].try_into()?);
    let version = u16::from_le_bytes(header[4..6].try_into()?);
    let requester = u16::from_le_bytes(header[6..8].try_into()?);
    let length = u32::from_le_bytes(header[8..12].try_into()?) as usize;
    anyhow::ensure!(magic == REQUEST_MAGIC && version == REQUEST_VERSION, "a request of magic {magic:#x}, version {version}: not a device of this lab's version");
    anyhow::ensure!((1..=TOKEN_MAX).contains(&length), "a token of {length} bytes (1 to {TOKEN_MAX})");
    let mut token = vec![0u8; length];
    stream.read_exact(&mut token)?;
    stream.write_all(&shared.present(requester, &token).encode())?;
    Ok(())
}

/// The owner's requests: one JSON line in, one JSON line out.
fn serve_owner(shared: &Shared, stream: UnixStream) -> anyhow::Result<()> {
    let mut line = String::new();
    BufReader::new(&stream).take(64 * 1024).read_line(&mut line)?;
    let reply = serde_json::from_str::<OwnerRequest>(&line)
        .map_err(anyhow::Error::from)
        .and_then(|request| shared.owner(request))
        .unwrap_or_else(|error| OwnerReply::Error { message: format!("{error:#}") });
    let mut stream = stream;
    writeln!(stream, "{}", serde_json::to_string(&reply)?)?;
    Ok(())
}

/// The device id tokens of this backend carry: its name, hashed, so two backends' tokens differ.
fn device_id(backend: &str) -> DeviceId {
    let hash = blake3::hash(format!("cxl-lab capability device {backend}").as_bytes());
    DeviceId(u64::from_le_bytes(hash.as_bytes()[..8].try_into().expect("8 bytes")))
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(parent)?;
    }
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).with_context(|| format!("writing {}", path.display()))?;
    file.write_all(bytes)?;
    Ok(())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

pub fn unhex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    (text.len() % 2 == 0).then_some(())?;
    (0..text.len()).step_by(2).map(|index| u8::from_str_radix(text.get(index..index + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capability::owner;
    use crate::capability::table::{self, HEADER_BYTES};

    fn requester(host: &str, requester: u16) -> CapabilityRequester {
        CapabilityRequester { host: host.to_owned(), device: format!("{host}-dev"), serial: 100 + u64::from(requester), requester }
    }

    /// What a capability-checked device does: the request on `device.sock`, the 32-byte verdict.
    fn present(config: &ServiceConfig, requester: u16, token: &[u8]) -> VerdictReply {
        let mut stream = UnixStream::connect(config.files.device_socket()).unwrap();
        let mut request = REQUEST_MAGIC.to_le_bytes().to_vec();
        request.extend_from_slice(&REQUEST_VERSION.to_le_bytes());
        request.extend_from_slice(&requester.to_le_bytes());
        request.extend_from_slice(&(token.len() as u32).to_le_bytes());
        request.extend_from_slice(token);
        stream.write_all(&request).unwrap();
        let mut reply = [0u8; VerdictReply::LEN];
        stream.read_exact(&mut reply).unwrap();
        VerdictReply::parse(&reply).unwrap()
    }

    /// What the device's check answers from the published table.
    fn device_allows(config: &ServiceConfig, requester: u16, address: u64, write: bool) -> bool {
        let bytes = std::fs::read(config.files.grant_table()).unwrap();
        let count = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
        table::lookup(&bytes[HEADER_BYTES..HEADER_BYTES + count * table::ENTRY_BYTES], requester, address, 8, write, Timestamp::now().as_millis())
    }

    fn mint(config: &ServiceConfig, start: u64, length: u64, rights: u8, holder: Option<u16>) -> Vec<u8> {
        match owner::ask(&config.files.owner_socket(), &OwnerRequest::Mint { start, length, rights, holder, expires_in_ms: None }).unwrap() {
            OwnerReply::Minted { token, .. } => unhex(&token).unwrap(),
            reply => panic!("{reply:?}"),
        }
    }

    #[test]
    fn a_presented_token_is_granted_published_and_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let config = ServiceConfig {
            backend: "mem".to_owned(),
            capacity_bytes: 1 << 20,
            files: CapabilityFiles { dir: dir.path().join("capability").join("mem") },
            secret: dir.path().join("secrets").join("capability-mem.key"),
            requesters: vec![requester("host0", 1), requester("host1", 2)],
        };
        let service = RunningService::start(&config).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&config.secret).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(!device_allows(&config, 1, 0, false), "nothing is granted before a token is presented");

        let root = mint(&config, 0, 0x2000, 3, None);
        let reply = present(&config, 1, &root);
        assert_eq!((reply.verdict, reply.start, reply.length), (Verdict::Granted, 0, 0x2000));
        assert!(device_allows(&config, 1, 0x1ff8, true), "the grant is in the table when the verdict comes back");
        assert!(!device_allows(&config, 2, 0, false), "requester 2 presented nothing");
        assert!(!device_allows(&config, 1, 0x2000, false), "past the token's range");

        let mut forged = root.clone();
        *forged.last_mut().unwrap() ^= 1;
        assert_eq!(present(&config, 2, &forged).verdict, Verdict::BadTag);
        assert_eq!(present(&config, 9, &root).verdict, Verdict::Refused, "a requester the lab did not give any device");
        assert_eq!(present(&config, 2, &mint(&config, 0, 0x1000, 1, Some(1))).verdict, Verdict::WrongHolder);

        let Ok(OwnerReply::Grants { grants, .. }) = owner::ask(&config.files.owner_socket(), &OwnerRequest::Grants) else { panic!() };
        assert_eq!((grants.len(), grants[0].host.as_str(), grants[0].rights.as_str()), (1, "host0", "rw"));
        assert!(matches!(owner::ask(&config.files.owner_socket(), &OwnerRequest::Revoke { token: hex(&root) }), Ok(OwnerReply::Revoked { .. })));
        assert!(!device_allows(&config, 1, 0, false), "a revoked token's grant is gone from the table");
        assert_eq!(present(&config, 1, &root).verdict, Verdict::Revoked);
        let error = owner::ask(&config.files.owner_socket(), &OwnerRequest::Revoke { token: "zz".to_owned() }).unwrap_err();
        assert!(format!("{error:#}").contains("not hex"), "{error:#}");

        drop(service);
        assert!(!config.files.device_socket().exists() && !config.files.owner_socket().exists(), "a stopped service leaves no socket");
    }
}
