//! The standard three-caveat capability written as macaroon text predicates, and their check
//!
//! The macaroon V2 baseline carries these predicates and checks them with this parser, the way
//! a libmacaroons verifier checks first-party caveats with its callbacks.

use cxl_lab_cap::{AccessKind, AccessRequest};

/// The standard capability (see `main.rs`) as libmacaroons-style first-party caveats.
pub fn standard_predicates(base: u64, length: u64, not_after_ms: u64) -> [String; 3] {
    [
        format!("range {base:x}+{length:x}"),
        "rights rw".to_string(),
        format!("before {not_after_ms}"),
    ]
}

/// Whether one predicate admits `request`; unknown predicates fail, as in libmacaroons.
pub fn predicate_holds(predicate: &[u8], request: &AccessRequest) -> bool {
    let Ok(text) = std::str::from_utf8(predicate) else {
        return false;
    };
    if let Some(range) = text.strip_prefix("range ") {
        let Some((base, length)) = range.split_once('+') else {
            return false;
        };
        let (Ok(base), Ok(length)) = (
            u64::from_str_radix(base, 16),
            u64::from_str_radix(length, 16),
        ) else {
            return false;
        };
        let (Some(range_end), Some(request_end)) = (
            base.checked_add(length),
            request.address.checked_add(request.length),
        ) else {
            return false;
        };
        request.length > 0 && base <= request.address && request_end <= range_end
    } else if let Some(rights) = text.strip_prefix("rights ") {
        match request.access {
            AccessKind::Read => rights.contains('r'),
            AccessKind::Write => rights.contains('w'),
        }
    } else if let Some(not_after) = text.strip_prefix("before ") {
        not_after
            .parse::<u64>()
            .is_ok_and(|not_after| request.now.as_millis() <= not_after)
    } else {
        false
    }
}
