//! `git` candidates: a ref of a repository, resolved to a commit and fetched into a bare
//! repository of the cache (`<cache>/git/<url hash>/`).
//!
//! `git ls-remote` names the commit (a ref that is already a full commit id is taken as it is);
//! then only that commit is fetched (`--depth 1`), or the ref when the server refuses a bare
//! commit id, and the commit must then be what arrived. An unreachable host, a missing ref or a
//! refused fetch falls through to the next candidate with git's own words. Nothing prompts:
//! `GIT_TERMINAL_PROMPT=0`, and a stalled transfer gives up after 30 s below 1 KiB/s.

use std::path::{Path, PathBuf};
use std::process::Command;

use fs_err as fs;

use crate::stack::cache::Cache;
use crate::stack::recipe::is_commit_id;
use crate::stack::sources::{GitCandidate, SourceError};
use crate::sys::runner::{CommandRunner, RunError};

/// The bare repository the commits of `url` are fetched into.
pub fn repository(cache: &Cache, url: &str) -> PathBuf {
    cache.layout.git_dir().join(&blake3::hash(url.as_bytes()).to_hex()[..16])
}


fn git(repository: Option<&Path>) -> Command {
    let mut command = Command::new("git");
    command.env("GIT_TERMINAL_PROMPT", "0").env("GIT_ASKPASS", "true");
    command.args(["-c", "http.lowSpeedLimit=1024", "-c", "http.lowSpeedTime=30", "-c", "protocol.version=2"]);
    if let Some(repository) = repository {
        command.arg("--git-dir").arg(repository);
    }
    command
}

/// Resolves the candidate's ref to a commit and fetches it; returns the commit id.
pub fn resolve(cache: &Cache, runner: &CommandRunner, candidate: &GitCandidate) -> Result<String, SourceError> {
    let commit = if is_commit_id(&candidate.reference) {
        candidate.reference.to_lowercase()
    } else {
        let mut command = git(None);
        command.args(["ls-remote", "--", &candidate.url, &candidate.reference]);
        let listed = runner.run_capture("git-ls-remote", &mut command).map_err(unavailable)?;
        commit_for_ref(&listed, &candidate.reference)
            .ok_or_else(|| SourceError::Unavailable(format!("{} has no ref `{}`", candidate.url, candidate.reference)))?
    };
    fetch(cache, runner, &candidate.url, &commit, Some(&candidate.reference))?;
    Ok(commit)
}

/// The commit `reference` names in `git ls-remote` output: a branch, then a tag (peeled), then
/// any ref spelled exactly so.
pub fn commit_for_ref(listed: &str, reference: &str) -> Option<String> {
    let refs: Vec<(&str, &str)> = listed.lines().filter_map(|line| line.split_once('\t')).collect();
    let wanted = [
        format!("refs/heads/{reference}"),
        format!("refs/tags/{reference}^{{}}"),
        format!("refs/tags/{reference}"),
        reference.to_owned(),
    ];
    wanted.iter().find_map(|name| refs.iter().find(|(_, listed)| listed == name).map(|(commit, _)| (*commit).to_owned()))
}

/// Makes sure `commit` of `url` is in the cache's repository: fetches it by id, or fetches
/// `reference` and checks that it brought `commit`.
pub fn fetch(cache: &Cache, runner: &CommandRunner, url: &str, commit: &str, reference: Option<&str>) -> Result<(), SourceError> {
    let repository = repository(cache, url);
    let _lock = cache.lock(&format!("git-{}", repository.file_name().unwrap_or_default().to_string_lossy()))?;
    if !repository.join("HEAD").is_file() {
        fs::create_dir_all(&repository).map_err(|error| SourceError::Fatal(error.into()))?;
        runner.run("git-init", git(None).args(["init", "--quiet", "--bare"]).arg(&repository)).map_err(|error| SourceError::Fatal(error.into()))?;
    }
    if has_commit(runner, &repository, commit) {
        return Ok(());
    }
    let by_id = runner.run("git-fetch", git(Some(&repository)).args(["fetch", "--quiet", "--depth", "1", "--", url, commit]));
    if let Err(error) = by_id {
        let Some(reference) = reference.filter(|reference| !is_commit_id(reference)) else { return Err(unavailable(error)) };
        // Servers that refuse an unadvertised commit id serve the ref it came from.
        runner
            .run("git-fetch", git(Some(&repository)).args(["fetch", "--quiet", "--depth", "1", "--", url, &format!("+{reference}:refs/cxl-lab/fetched")]))
            .map_err(unavailable)?;
    }
    if !has_commit(runner, &repository, commit) {
        return Err(SourceError::Unavailable(format!("fetching {url} did not bring commit {commit} (the ref moved?)")));
    }
    Ok(())
}

fn has_commit(runner: &CommandRunner, repository: &Path, commit: &str) -> bool {
    runner.run("git-has-commit", git(Some(repository)).args(["cat-file", "-e", &format!("{commit}^{{commit}}")])).is_ok()
}

/// Writes the tree of `commit` into `dest` (created), without `.git`: `git archive` then `tar`.
pub fn unpack(cache: &Cache, runner: &CommandRunner, url: &str, commit: &str, dest: &Path) -> anyhow::Result<()> {
    let repository = repository(cache, url);
    fs::create_dir_all(dest)?;
    let archive = dest.with_extension("git.tar");
    runner.run("git-archive", git(Some(&repository)).args(["archive", "--format=tar", "-o"]).arg(&archive).arg(commit))?;
    let extracted = runner.run("git-archive", Command::new("tar").arg("-xf").arg(&archive).arg("-C").arg(dest));
    fs::remove_file(&archive)?;
    extracted?;
    Ok(())
}

/// git could not answer: the host, the ref or the commit is not there. Its words are the reason.
fn unavailable(error: RunError) -> SourceError {
    match error {
        RunError::Failed { .. } => SourceError::unavailable(&error),
        other => SourceError::Fatal(other.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_branches_then_peeled_tags() {
        let listed = "1111111111111111111111111111111111111111\trefs/heads/cxl-2025-06-10\n\
                      2222222222222222222222222222222222222222\trefs/tags/v1\n\
                      3333333333333333333333333333333333333333\trefs/tags/v1^{}\n";
        assert_eq!(commit_for_ref(listed, "cxl-2025-06-10").as_deref(), Some("1111111111111111111111111111111111111111"));
        assert_eq!(commit_for_ref(listed, "v1").as_deref(), Some("3333333333333333333333333333333333333333"));
        assert_eq!(commit_for_ref(listed, "refs/tags/v1").as_deref(), Some("2222222222222222222222222222222222222222"));
        assert_eq!(commit_for_ref(listed, "main"), None);
        assert!(is_commit_id("3333333333333333333333333333333333333333"));
        assert!(!is_commit_id("cxl-2025-06-10"));
    }
}
