//! Replacing a small file so that a reader sees the old content or the new, never half of it:
//! write beside it, then rename over it. Lock files and lab state files go through here.

use std::path::Path;

use fs_err as fs;

/// Writes `contents` to `path` atomically, creating the parent directory if needed. The
/// temporary name carries the process id, so two writers never share one; a write that fails
/// (a full disk) removes it again.
pub fn replace_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let file_name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let temporary = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    let written = fs::write(&temporary, contents).and_then(|()| fs::rename(&temporary, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_content_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        super::replace_file(&path, b"old").unwrap();
        super::replace_file(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    }
}
