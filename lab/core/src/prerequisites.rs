//! What the lab's integration tests need from the machine (root, a QEMU, the Debian archive), and
//! what a test does when something is missing.
//!
//! Outside CI a contributor without root or QEMU sees the test skipped with the reason (written
//! straight to stderr, past the test harness's capture, so `cargo test` shows it). Under
//! `CI=true` a missing prerequisite fails the test: CI installs everything, so a skip there would
//! hide a broken install step.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// One thing a test needs.
#[derive(Clone, Debug)]
pub enum Prerequisite {
    /// Root (apt installs, debootstrap's chroot).
    Root,
    /// A `qemu-system-x86_64` to run (`CXL_LAB_TEST_QEMU` names another).
    Qemu,
    /// The Debian archive of the distro recipe (`images/distro.yaml`) answers.
    Archive,
    /// The Debian archive at this mirror URL answers.
    Mirror(String),
    /// A host tool `cargo xtask host setup` installs.
    Tool(crate::stack::host::HostTool),
}

impl Prerequisite {
    /// `None` when met, else why not.
    fn unmet(&self) -> Option<String> {
        match self {
            Prerequisite::Root => (!crate::sys::process::is_root()).then(|| "needs root".to_owned()),
            Prerequisite::Qemu => {
                let qemu = test_qemu();
                let found = if qemu.contains('/') { std::path::Path::new(&qemu).is_file() } else { crate::stack::host::find_program(&qemu).is_some() };
                (!found).then(|| format!("needs QEMU: `{qemu}` not found (`cargo xtask host setup` installs it)"))
            }
            Prerequisite::Archive => match crate::stack::recipe::load(&workspace_images_dir(), crate::stack::StackKind::Distro) {
                Ok(recipe) => Prerequisite::Mirror(recipe.recipe.archive.mirror).unmet(),
                Err(error) => Some(format!("needs the distro recipe: {error}")),
            },
            Prerequisite::Tool(tool) => {
                tool.locate().is_none().then(|| format!("needs {} ({}; `cargo xtask host setup` installs it)", tool.package, tool.program))
            }
            Prerequisite::Mirror(mirror) => {
                archive_unreachable(mirror).map(|why| format!("needs the Debian archive at {mirror}: {why}"))
            }
        }
    }
}

/// `images/` of the checkout this crate was built from.
fn workspace_images_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../images")
}

/// The QEMU binary tests run: `CXL_LAB_TEST_QEMU`, else `qemu-system-x86_64` from PATH.
pub fn test_qemu() -> String {
    std::env::var("CXL_LAB_TEST_QEMU").unwrap_or_else(|_| crate::stack::host::QEMU_PROGRAM.to_owned())
}

/// Whether this run is CI's (`CI=true`), where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true" || value == "1")
}

/// `true` when every prerequisite is met. Otherwise, outside CI, prints why the calling test is
/// skipped and returns `false` (the test returns early); under CI it panics with the reason.
pub fn require(prerequisites: &[Prerequisite]) -> bool {
    let unmet: Vec<String> = prerequisites.iter().filter_map(Prerequisite::unmet).collect();
    if unmet.is_empty() {
        return true;
    }
    let test = std::thread::current().name().unwrap_or("this test").to_owned();
    let reason = unmet.join("; ");
    if in_ci() {
        panic!("{test}: {reason} (CI=true: a missing prerequisite is a failure, not a skip)");
    }
    crate::shell::report_skipped_test(&test, &reason);
    false
}

/// Connects to the mirror's host (or the `http_proxy` apt would use); `None` when it answers.
fn archive_unreachable(mirror: &str) -> Option<String> {
    let proxy = std::env::var("http_proxy").ok().filter(|proxy| !proxy.is_empty());
    let url = proxy.as_deref().unwrap_or(mirror);
    let Some(address) = host_and_port(url) else { return Some(format!("cannot read a host in `{url}`")) };
    let addresses = match address.to_socket_addrs() {
        Ok(addresses) => addresses.collect::<Vec<_>>(),
        Err(error) => return Some(format!("{address}: {error}")),
    };
    let connected = addresses.iter().any(|socket| TcpStream::connect_timeout(socket, Duration::from_secs(5)).is_ok());
    (!connected).then(|| format!("{address} does not answer"))
}

/// `http://host[:port]/path` → `host:port`.
fn host_and_port(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split('/').next().filter(|authority| !authority.is_empty())?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    if authority.contains(':') {
        return Some(authority.to_owned());
    }
    let port = if scheme == "https" { 443 } else { 80 };
    Some(format!("{authority}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_urls_give_host_and_port() {
        assert_eq!(host_and_port("http://mirror.example/debian").as_deref(), Some("mirror.example:80"));
        assert_eq!(host_and_port("https://mirror.example").as_deref(), Some("mirror.example:443"));
        assert_eq!(host_and_port("http://user@proxy.example:3128/").as_deref(), Some("proxy.example:3128"));
        assert_eq!(host_and_port("mirror.example"), None);
    }

    #[test]
    fn an_unreachable_archive_is_unmet_with_its_reason() {
        // Port 9 on loopback (discard) is closed here: the connection is refused at once.
        let unmet = Prerequisite::Mirror("http://127.0.0.1:9/debian".to_owned()).unmet().unwrap();
        assert!(unmet.contains("127.0.0.1:9 does not answer"), "{unmet}");
    }
}
