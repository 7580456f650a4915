//! A scenario file as written (`docs/scenarios.md`): requesters, buffers, grants, delegations and
//! an access trace, every value with its source location. [`super::parse_scenario`] checks it.

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::size::ByteSize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// Defaults to the file name without `.yaml`.
    pub name: Option<String>,
    #[serde(default)]
    pub description: String,
    pub requesters: Spanned<Vec<RequesterSpec>>,
    pub buffers: Spanned<Vec<BufferSpec>>,
    #[serde(default)]
    pub grants: Vec<GrantSpec>,
    #[serde(default)]
    pub delegations: Vec<DelegationSpec>,
    #[serde(default)]
    pub trace: Vec<TraceSpec>,
}

/// A requester, or `count` of them named `<name>0`, `<name>1`, ...
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequesterSpec {
    pub name: Spanned<String>,
    /// The CXL port its accesses come from (a host, or its own endpoint); default: its own name.
    pub port: Option<String>,
    pub count: Option<Spanned<u32>>,
}

/// A buffer, or `count` of them named `<name>0`, `<name>1`, ... (a group named `<name>`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferSpec {
    pub name: Spanned<String>,
    pub size: Spanned<ByteSize>,
    pub count: Option<Spanned<u32>>,
}

/// `requester` (or a group) gets `buffer` (or each buffer of a group); or, with `pairwise`, the
/// buffers of the group go round-robin to each pair of the listed requesters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantSpec {
    pub requester: Option<Spanned<String>>,
    pub pairwise: Option<Spanned<Vec<Spanned<String>>>>,
    pub buffer: Spanned<String>,
    /// `r`, `w` or `rw`.
    pub rights: Spanned<String>,
    /// Whether the holder may hand the grant on.
    #[serde(default)]
    pub delegate: bool,
}

/// `from` hands its grant on `buffer` to `to`, with at most its rights.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelegationSpec {
    /// Names the delegation for a `revoke:` in the trace.
    pub id: Spanned<String>,
    pub from: Spanned<String>,
    pub to: Spanned<String>,
    pub buffer: Spanned<String>,
    pub rights: Spanned<String>,
    #[serde(default)]
    pub delegate: bool,
}

/// One trace step: an access (`requester`, `buffer`, `offset`, `length`, `access`), a
/// revocation (`revoke: <delegation id>`) or a sweep over a buffer group (`sweep: <group>`:
/// every grantee reads and writes each buffer and the first requester without a grant reads it).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceSpec {
    pub requester: Option<Spanned<String>>,
    pub buffer: Option<Spanned<String>>,
    #[serde(default)]
    pub offset: u64,
    pub length: Option<Spanned<u64>>,
    pub access: Option<Spanned<String>>,
    pub revoke: Option<Spanned<String>>,
    pub sweep: Option<Spanned<String>>,
}
