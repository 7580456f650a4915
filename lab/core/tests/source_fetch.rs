//! The source stack's fetchers against real programs on local sources, fast (no build):
//! - a `git` candidate on a local repository: an unreachable one before it falls through at once,
//!   the ref becomes the commit id in `images/source.lock`, and the tree unpacks;
//! - a `tarball` from a local HTTP server: the right sha256 is kept and unpacks, a wrong one is
//!   refused and leaves nothing in the downloads directory.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cxl_lab_core::layout::Layout;
use cxl_lab_core::stack::cache::Cache;
use cxl_lab_core::stack::distro::StackOptions;
use cxl_lab_core::stack::lock::{self, StackLock};
use cxl_lab_core::stack::source::{self, resolve, tarball, SourceComponent};
use cxl_lab_core::stack::sources::{Pin, SourceError};
use cxl_lab_core::stack::StackKind;
use cxl_lab_core::sys::runner::CommandRunner;
use cxl_lab_core::Shell;

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git").arg("-C").arg(dir).args(args).output().unwrap();
    assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// A repository with one commit on branch `cxl-2099-01-01`; returns its commit id.
fn local_repository(dir: &Path) -> String {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(dir.join("configure"), "#!/bin/sh\necho from git\n").unwrap();
    git(dir, &["add", "configure"]);
    git(dir, &["-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "--quiet", "-m", "one"]);
    git(dir, &["branch", "cxl-2099-01-01"]);
    git(dir, &["rev-parse", "HEAD"])
}

fn source_recipe(qemu_sources: &str) -> String {
    format!(
        "stack: source\nqemu:\n  sources:\n{qemu_sources}  firmware: {{ suite: trixie, packages: [seabios] }}\n\
         kernel:\n  sources:\n    - debian-source: {{ package: linux, suite: trixie }}\n\
         ndctl:\n  sources:\n    - debian-source: {{ package: ndctl, suite: trixie }}\n"
    )
}

#[test]
fn a_git_ref_resolves_to_its_commit_in_the_lock_and_unpacks() {
    let dir = tempfile::tempdir().unwrap();
    let repository = dir.path().join("qemu.git");
    let commit = local_repository(&repository);
    let workspace = dir.path().join("checkout");
    std::fs::create_dir_all(workspace.join("images")).unwrap();
    let sources = format!(
        "    - git: {{ url: 'http://127.0.0.1:1/nothing.git', ref: cxl-2099-01-01 }}\n    - git: {{ url: 'file://{}', ref: cxl-2099-01-01 }}\n",
        repository.display()
    );
    std::fs::write(workspace.join("images/source.yaml"), source_recipe(&sources)).unwrap();
    let layout = Layout { workspace: workspace.clone(), cache: dir.path().join("cache"), state: dir.path().join("state") };
    let shell = Shell::plain();
    let options = StackOptions::default();

    // --locked refuses to resolve: without a lock there is nothing to build from.
    let locked = StackOptions { locked: true, ..StackOptions::default() };
    let refused = source::Session::open(&layout, &shell, &locked, &["git"]).err().expect("--locked without a lock is refused").to_string();
    assert!(refused.starts_with("--locked, but there is no lock file"), "{refused}");

    let started = Instant::now();
    let mut session = source::Session::open(&layout, &shell, &options, &["git"]).unwrap();
    let pin = session.pinned(SourceComponent::Qemu).unwrap();
    session.save_lock().unwrap();
    assert!(started.elapsed() < Duration::from_secs(30), "the unreachable host did not fall through at once");
    assert_eq!(pin, Pin::Git { url: format!("file://{}", repository.display()), commit: commit.clone() });
    let notes = session.notes().join("\n");
    assert!(notes.contains("skipped git http://127.0.0.1:1/nothing.git"), "{notes}");

    let lock = StackLock::read(&lock::lock_path(&workspace.join("images"), StackKind::Source)).unwrap().unwrap();
    assert_eq!(lock.sources["qemu"].pin, pin);
    assert!(std::fs::read_to_string(workspace.join("images/source.lock")).unwrap().contains(&commit));

    // The tree of that commit, without .git; and a second session takes the pin from the lock.
    let cache = Cache::new(&layout);
    let runner = CommandRunner::new(layout.build_logs_dir());
    let tree = dir.path().join("tree");
    resolve::unpack(&cache, &runner, &pin, &tree).unwrap();
    assert_eq!(std::fs::read_to_string(tree.join("configure")).unwrap(), "#!/bin/sh\necho from git\n");
    assert!(!tree.join(".git").exists());
    git(&repository, &["-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "--quiet", "--allow-empty", "-m", "two"]);
    let mut again = source::Session::open(&layout, &shell, &locked, &["git"]).unwrap();
    assert_eq!(again.pinned(SourceComponent::Qemu).unwrap(), pin);
}

/// Serves `body` over HTTP on 127.0.0.1 for up to `requests` requests (then the thread ends).
fn serve(body: Vec<u8>, requests: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(requests) {
            let Ok(mut stream) = stream else { continue };
            stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let header = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/x-xz\r\nConnection: close\r\n\r\n", body.len());
            let _ = stream.write_all(header.as_bytes()).and_then(|()| stream.write_all(&body));
        }
    });
    format!("http://{address}/qemu-0.0.1.tar.xz")
}

#[test]
fn a_tarball_with_a_wrong_sha256_is_refused_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("qemu-0.0.1");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("VERSION"), "0.0.1\n").unwrap();
    let tarball = dir.path().join("qemu-0.0.1.tar.xz");
    let status = Command::new("tar").arg("-cJf").arg(&tarball).arg("-C").arg(dir.path()).arg("qemu-0.0.1").status().unwrap();
    assert!(status.success());
    let body = std::fs::read(&tarball).unwrap();
    let sha256 = cxl_lab_core::stack::cache::sha256_file(&tarball).unwrap();
    let url = serve(body, 4);

    let layout = Layout::for_cache(dir.path().join("cache"));
    let cache = Cache::new(&layout);
    let runner = CommandRunner::new(layout.build_logs_dir());
    let wrong = format!("{}{}", if sha256.starts_with('0') { "1" } else { "0" }, &sha256[1..]);
    match tarball::fetch(&cache, &runner, &url, &wrong) {
        Err(SourceError::Fatal(error)) => assert!(format!("{error:#}").contains("Hash Sum mismatch"), "{error:#}"),
        other => panic!("a wrong sha256 must be refused: {other:?}"),
    }
    let left: Vec<_> = std::fs::read_dir(layout.downloads_dir()).map(|entries| entries.flatten().map(|entry| entry.file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "the refused download left {left:?}");

    let kept = tarball::fetch(&cache, &runner, &url, &sha256).unwrap();
    assert_eq!(kept, layout.downloads_dir().join(tarball::download_name(&url, &sha256)));
    let unpacked = dir.path().join("unpacked");
    resolve::unpack(&cache, &runner, &Pin::Tarball { url: url.clone(), sha256: sha256.clone() }, &unpacked).unwrap();
    assert_eq!(std::fs::read_to_string(unpacked.join("VERSION")).unwrap(), "0.0.1\n");
    // Whole in the cache: no second request is needed.
    let cached = tarball::fetch(&cache, &runner, &url.replace(&url[7..url.rfind('/').unwrap()], "127.0.0.1:1"), &sha256);
    assert_eq!(cached.unwrap(), kept);
}
