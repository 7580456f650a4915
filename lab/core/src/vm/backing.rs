//! The files behind a machine's memory backends (`memory-backend-file,share=on`).
//!
//! QEMU refuses a backing file smaller than the backend, and a file left by another topology can
//! have any size, so every boot sizes each file exactly first. Files are sparse: a 4 GiB device
//! costs disk only for what the guest writes. Contents survive between boots of the same topology
//! (persistent memory stays persistent).
//!
//! Which files and where is the renderer's decision ([`crate::render::backend_files`], which also
//! refuses a backend id that could name a file outside the memory directory); this module only
//! creates and sizes them.

use anyhow::Context as _;

use crate::qemu::BackendFile;

/// Creates (or resizes) each file, and its directory, to exactly its size.
pub fn prepare_backend_files(files: &[BackendFile]) -> anyhow::Result<()> {
    for BackendFile { path, size } in files {
        if let Some(dir) = path.parent() {
            fs_err::create_dir_all(dir)?;
        }
        let file = fs_err::OpenOptions::new().create(true).truncate(false).read(true).write(true).open(path)?;
        if file.metadata()?.len() != *size {
            file.set_len(*size).with_context(|| format!("sizing memory backend file {} to {size} bytes", path.display()))?;
        }
    }
    Ok(())
}
