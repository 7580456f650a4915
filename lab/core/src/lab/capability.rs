//! `lab cap mint|revoke|grants`: the lab's owner talks to the capability service of one of the
//! running lab's `capabilities: true` backends (`docs/capability-lab.md`).

use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::capability::owner::{self, GrantView, OwnerReply, OwnerRequest};
use crate::capability::service::{hex, unhex};
use crate::capability::ServiceConfig;
use crate::lab::LabContext;

/// What `lab cap mint` asks for; unset fields mean the whole backend, read-write, no holder, no
/// expiry.
#[derive(Clone, Debug, Default)]
pub struct MintRequest {
    /// `START+LENGTH` (sizes in bytes, `0x` hex allowed).
    pub range: Option<String>,
    /// `r`, `w` or `rw`.
    pub rights: Option<String>,
    /// A host (`host0`), a host's device (`host0/cxl-shared0`) or a requester id.
    pub holder: Option<String>,
    /// `30s`, `5m`, ...
    pub expires_in: Option<String>,
}

pub struct Minted {
    pub backend: String,
    pub bytes: Vec<u8>,
    pub epoch: u64,
    pub token_id: u64,
}

/// The capability service of `backend` in the running lab (the only one when `None`).
pub fn service(context: &LabContext, backend: Option<&str>) -> anyhow::Result<ServiceConfig> {
    let Some(state) = context.files.read_live_state()? else {
        bail!("lab `{}` is not running: `cargo xtask lab up --profile P --stack source` first", context.files.name);
    };
    let services = &state.plan.capabilities;
    let known = || services.iter().map(|service| service.backend.as_str()).collect::<Vec<_>>().join(", ");
    match (backend, services.as_slice()) {
        (_, []) => bail!(
            "lab `{}` (profile `{}`) runs no capability service: no memory backend is `capabilities: true`, or its QEMU has no capability device (`lab up` said which)",
            context.files.name,
            state.plan.profile
        ),
        (None, [only]) => Ok(only.clone()),
        (None, _) => bail!("lab `{}` has several capability backends ({}): name one with --backend", context.files.name, known()),
        (Some(name), _) => services.iter().find(|service| service.backend == name).cloned().ok_or_else(|| anyhow::anyhow!("no capability backend `{name}` in lab `{}` (it has: {})", context.files.name, known())),
    }
}

pub fn mint(context: &LabContext, backend: Option<&str>, request: &MintRequest) -> anyhow::Result<Minted> {
    let service = service(context, backend)?;
    let (start, length) = match &request.range {
        Some(range) => parse_range(range)?,
        None => (0, service.capacity_bytes),
    };
    let rights = parse_rights(request.rights.as_deref().unwrap_or("rw"))?;
    let holder = request.holder.as_deref().map(|holder| requester_of(&service, holder)).transpose()?;
    let expires_in = request.expires_in.as_deref().map(|text| humantime::parse_duration(text).with_context(|| format!("--expires-in `{text}`"))).transpose()?;
    let expires_in_ms = expires_in.map(|duration: Duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
    match owner::ask(&service.files.owner_socket(), &OwnerRequest::Mint { start, length, rights, holder, expires_in_ms })? {
        OwnerReply::Minted { token, epoch, token_id } => Ok(Minted { backend: service.backend, bytes: unhex(&token).context("the service's token is not hex")?, epoch, token_id }),
        reply => bail!("the capability service answered {reply:?} to a mint"),
    }
}

/// Revokes the token `bytes` (and every token narrowed from the same root: they share its id).
pub fn revoke(context: &LabContext, backend: Option<&str>, bytes: &[u8]) -> anyhow::Result<String> {
    let service = service(context, backend)?;
    match owner::ask(&service.files.owner_socket(), &OwnerRequest::Revoke { token: hex(bytes) })? {
        OwnerReply::Revoked { epoch, token_id, outcome } => Ok(format!("token {token_id} of epoch {epoch} of `{}`: {outcome}", service.backend)),
        reply => bail!("the capability service answered {reply:?} to a revocation"),
    }
}

pub fn grants(context: &LabContext, backend: Option<&str>) -> anyhow::Result<(String, u64, Vec<GrantView>)> {
    let service = service(context, backend)?;
    match owner::ask(&service.files.owner_socket(), &OwnerRequest::Grants)? {
        OwnerReply::Grants { backend, epoch, grants } => Ok((backend, epoch, grants)),
        reply => bail!("the capability service answered {reply:?} to a grants request"),
    }
}

/// `START+LENGTH`, each decimal or `0x` hex.
pub fn parse_range(text: &str) -> anyhow::Result<(u64, u64)> {
    cxl_lab_guest::capability::parse_range(text.trim()).with_context(|| format!("range `{text}`: write START+LENGTH (0x0+0x1000): the start and the length each a number, decimal or 0x hex"))
}

/// `r`, `w`, `rw` as rights bits (bit 0 read, bit 1 write).
pub fn parse_rights(text: &str) -> anyhow::Result<u8> {
    cxl_lab_guest::capability::parse_rights(text).map(|rights| rights.bits()).with_context(|| format!("rights `{text}`: r, w or rw"))
}

/// The requester id a holder names: a host with one device on the backend, `host/device`, or the
/// number itself.
pub fn requester_of(service: &ServiceConfig, holder: &str) -> anyhow::Result<u16> {
    if let Ok(number) = holder.parse::<u16>() {
        if service.requesters.iter().any(|known| known.requester == number) {
            return Ok(number);
        }
    }
    let matching: Vec<_> = service
        .requesters
        .iter()
        .filter(|known| known.host == holder || format!("{}/{}", known.host, known.device) == holder)
        .collect();
    match matching.as_slice() {
        [one] => Ok(one.requester),
        [] => {
            let known: Vec<String> = service.requesters.iter().map(|known| format!("{}/{} ({})", known.host, known.device, known.requester)).collect();
            bail!("holder `{holder}` uses no device of `{}` (its requesters: {})", service.backend, known.join(", "))
        }
        _ => bail!("host `{holder}` has several devices on `{}`: name one as host/device", service.backend),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_rights_and_numbers_parse_or_say_why() {
        assert_eq!(parse_range("0x1000+4096").unwrap(), (0x1000, 4096));
        assert!(parse_range("4096").unwrap_err().to_string().contains("START+LENGTH"));
        assert!(format!("{:#}", parse_range("0x+1").unwrap_err()).contains("start"));
        assert_eq!(parse_rights("r").unwrap(), 1);
        assert_eq!(parse_rights("rw").unwrap(), 3);
        assert!(parse_rights("x").is_err());
    }

    #[test]
    fn holders_are_named_by_host_device_or_number() {
        let requester = |host: &str, device: &str, requester: u16| crate::model::topology::CapabilityRequester { host: host.to_owned(), device: device.to_owned(), serial: 0, requester };
        let service = ServiceConfig {
            backend: "mem".to_owned(),
            capacity_bytes: 1 << 28,
            files: crate::layout::CapabilityFiles { dir: "/nonexistent".into() },
            secret: "/nonexistent/key".into(),
            requesters: vec![requester("host0", "a", 1), requester("host0", "b", 2), requester("host1", "c", 3)],
        };
        assert_eq!(requester_of(&service, "host1").unwrap(), 3);
        assert_eq!(requester_of(&service, "host0/b").unwrap(), 2);
        assert_eq!(requester_of(&service, "2").unwrap(), 2);
        assert!(requester_of(&service, "host0").unwrap_err().to_string().contains("several devices"));
        let unknown = requester_of(&service, "host9").unwrap_err().to_string();
        assert!(unknown.contains("host0/a (1), host0/b (2), host1/c (3)"), "{unknown}");
        assert!(requester_of(&service, "7").is_err(), "a number no device has");
    }
}
