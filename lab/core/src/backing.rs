//! The files behind a lab's memory backends (`memory-backend-file,share=on`).
//!
//! QEMU refuses a backing file smaller than the backend, and a file left by another topology can
//! have any size, so every boot sizes each file exactly first. Files are sparse: a 4 GiB device
//! costs disk only for what the guest writes. Contents survive between boots of the same topology
//! (persistent memory stays persistent).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use cxl_lab_model::{Host, Topology};

/// The file backing memory backend `id` in a lab's memory directory.
pub fn backend_file(memory_dir: &Path, backend_id: &str) -> PathBuf {
    memory_dir.join(format!("{backend_id}.raw"))
}

/// Creates (or resizes) the backing file of every backend `host` uses; returns their paths.
pub fn prepare_backend_files(topology: &Topology, host: &Host, memory_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    fs_err::create_dir_all(memory_dir)?;
    let mut files = Vec::new();
    for backend in topology.backends_of(host) {
        let path = backend_file(memory_dir, &backend.id);
        let file = fs_err::OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path)?;
        let current = file.metadata()?.len();
        if current != backend.size {
            file.set_len(backend.size)
                .with_context(|| format!("sizing memory backend file {} to {} bytes", path.display(), backend.size))?;
        }
        files.push(path);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_new_and_stale_files_exactly() {
        let source = "machine: {memory: 1G}\nmemory_backends: [{id: m0, size: 256M}]\nhost_bridges:\n  - id: hb\n    bus_nr: 1\n    root_ports:\n      - {id: rp, port: 0, chassis: 0, slot: 0, type3: {id: d, serial: 1, volatile: m0}}\n";
        let topology = cxl_lab_model::parse_profile("t.yaml", source, "t").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(backend_file(dir.path(), "m0"), b"stale and short").unwrap();
        let files = prepare_backend_files(&topology, &topology.hosts[0], dir.path()).unwrap();
        assert_eq!(files, vec![backend_file(dir.path(), "m0")]);
        assert_eq!(std::fs::metadata(&files[0]).unwrap().len(), 256 << 20);
    }
}
