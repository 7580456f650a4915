//! What the lab's owner asks a capability service (`lab cap mint|revoke|grants`): one JSON line
//! in, one JSON line out, on the service's `owner.sock`. Only the lab's user reaches it: the
//! socket is in the lab's private (0700) run directory, which no guest sees.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _};
use cxl_lab_cap::InstalledGrant;
use serde::{Deserialize, Serialize};

use crate::model::topology::CapabilityRequester;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum OwnerRequest {
    /// A root token of the backend: a range, rights (bit 0 read, bit 1 write), optionally bound
    /// to one requester and expiring.
    Mint { start: u64, length: u64, rights: u8, holder: Option<u16>, expires_in_ms: Option<u64> },
    /// Revokes the token (hex bytes, as minted or attenuated: its id and epoch are what count).
    Revoke { token: String },
    /// The installed grants.
    Grants,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
pub enum OwnerReply {
    Minted { token: String, epoch: u64, token_id: u64 },
    Revoked { epoch: u64, token_id: u64, outcome: String },
    Grants { backend: String, epoch: u64, grants: Vec<GrantView> },
    Error { message: String },
}

/// One installed grant, as `lab cap grants` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantView {
    pub host: String,
    pub device: String,
    pub requester: u16,
    pub token_id: u64,
    pub start: u64,
    pub length: u64,
    /// `r`, `w` or `rw`.
    pub rights: String,
    /// The last Unix millisecond it admits; `None`: never expires.
    pub expires_ms: Option<u64>,
}

impl GrantView {
    pub fn of(requester: &CapabilityRequester, grant: &InstalledGrant) -> GrantView {
        GrantView {
            host: requester.host.clone(),
            device: requester.device.clone(),
            requester: requester.requester,
            token_id: grant.token_id.0,
            start: grant.range.base(),
            length: grant.range.length(),
            rights: cxl_lab_guest::capability::rights_text(grant.rights).to_owned(),
            expires_ms: grant.expires_after.map(|last| last.as_millis()),
        }
    }
}

impl std::fmt::Display for GrantView {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let expiry = match self.expires_ms {
            Some(ms) => format!("until {}", humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms))),
            None => "never expires".to_owned(),
        };
        write!(formatter, "{}/{} (requester {}): [{:#x}, +{:#x}) {} {expiry}, token {}", self.host, self.device, self.requester, self.start, self.length, self.rights, self.token_id)
    }
}

/// Sends `request` to the service listening on `socket` and returns its reply; a service's
/// refusal (`OwnerReply::Error`) is an error.
pub fn ask(socket: &Path, request: &OwnerRequest) -> anyhow::Result<OwnerReply> {
    let mut stream = UnixStream::connect(socket).with_context(|| format!("no capability service answers at {} (is the lab up?)", socket.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    writeln!(stream, "{}", serde_json::to_string(request)?)?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    match serde_json::from_str(&line).with_context(|| format!("the capability service answered `{}`", line.trim()))? {
        OwnerReply::Error { message } => bail!("the capability service refused: {message}"),
        reply => Ok(reply),
    }
}
