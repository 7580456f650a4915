//! The lab's own patches to a source tree (`qemu.patches` in `images/source.yaml`): files under
//! the images directory, applied in the recipe's order with `patch -p1` after the tree is
//! unpacked. Each patch's name and blake3 are part of the artifact's key, so changing, adding or
//! reordering one builds anew; a patch that does not apply fails the build naming it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use serde::Serialize;

use crate::sys::runner::CommandRunner;

/// One patch as the key records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SourcePatch {
    /// As the recipe names it, relative to the images directory.
    pub name: String,
    pub blake3: String,
    #[serde(skip)]
    pub path: PathBuf,
}

/// Reads the patches `names` (relative to `images_dir`, in order).
pub fn read(images_dir: &Path, names: &[PathBuf]) -> anyhow::Result<Vec<SourcePatch>> {
    names
        .iter()
        .map(|name| {
            let path = images_dir.join(name);
            let bytes = fs_err::read(&path).context("reading a patch the source recipe lists")?;
            Ok(SourcePatch { name: name.display().to_string(), blake3: blake3::hash(&bytes).to_hex().to_string(), path })
        })
        .collect()
}

/// Applies `patches` in order to the unpacked `tree`; the first that does not apply is the error.
pub fn apply(runner: &CommandRunner, tree: &Path, patches: &[SourcePatch], source: &str) -> anyhow::Result<()> {
    for patch in patches {
        let mut command = Command::new("patch");
        command.args(["-p1", "--batch", "--forward", "--no-backup-if-mismatch", "-d"]).arg(tree).arg("-i").arg(&patch.path);
        runner.run(&format!("patch {}", patch.name), &mut command).with_context(|| format!("the lab's patch {} does not apply to {source}", patch.name))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATCH: &str = "--- a/hello.txt\n+++ b/hello.txt\n@@ -1 +1 @@\n-hello\n+hello, CXL\n";

    #[test]
    fn patches_apply_in_order_and_one_that_does_not_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (images, tree) = (dir.path().join("images"), dir.path().join("tree"));
        std::fs::create_dir_all(images.join("patches")).unwrap();
        std::fs::create_dir_all(&tree).unwrap();
        std::fs::write(tree.join("hello.txt"), "hello\n").unwrap();
        std::fs::write(images.join("patches/0001-greet.patch"), PATCH).unwrap();
        let runner = CommandRunner::new(dir.path().join("logs"));
        let patches = read(&images, &[PathBuf::from("patches/0001-greet.patch")]).unwrap();
        assert_eq!(patches[0].name, "patches/0001-greet.patch");
        apply(&runner, &tree, &patches, "hello 1.0").unwrap();
        assert_eq!(std::fs::read_to_string(tree.join("hello.txt")).unwrap(), "hello, CXL\n");

        // Applied again, the same patch no longer fits the tree.
        let error = apply(&runner, &tree, &patches, "hello 1.0").unwrap_err();
        assert!(format!("{error:#}").contains("the lab's patch patches/0001-greet.patch does not apply to hello 1.0"), "{error:#}");
    }

    #[test]
    fn a_missing_patch_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let error = read(dir.path(), &[PathBuf::from("patches/none.patch")]).unwrap_err();
        assert!(format!("{error:#}").contains("none.patch"), "{error:#}");
    }
}
