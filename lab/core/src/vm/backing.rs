//! The files behind a lab's memory backends (`memory-backend-file,share=on`).
//!
//! QEMU refuses a backing file smaller than the backend, and a file left by another topology can
//! have any size, so every boot sizes each file exactly first. Files are sparse: a 4 GiB device
//! costs disk only for what the guest writes. Contents survive between boots of the same topology
//! (persistent memory stays persistent).
//!
//! These files are created and sized from profile data, so a backend id that could name a file
//! outside the memory directory is refused here too, not only by the validator: a `Topology` can
//! be built without it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use cxl_lab_model::validate::{id_wellformed, MAX_BACKEND_ID_LEN};
use cxl_lab_model::{Host, Topology};

/// The file backing memory backend `id` in a lab's memory directory; an id that is not a QEMU
/// identifier of at most [`MAX_BACKEND_ID_LEN`] bytes (which could leave the directory) is an error.
pub fn backend_file(memory_dir: &Path, backend_id: &str) -> anyhow::Result<PathBuf> {
    if !id_wellformed(backend_id) || backend_id.len() > MAX_BACKEND_ID_LEN {
        bail!("memory backend id `{}` cannot name a file in {}", backend_id.escape_debug(), memory_dir.display());
    }
    Ok(memory_dir.join(format!("{backend_id}.raw")))
}

/// Creates (or resizes) the backing file of every backend `host` uses; returns their paths.
pub fn prepare_backend_files(topology: &Topology, host: &Host, memory_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    fs_err::create_dir_all(memory_dir)?;
    let mut files = Vec::new();
    for backend in topology.backends_of(host) {
        let path = backend_file(memory_dir, &backend.id)?;
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

    /// One device on backend `m0` (256 MiB).
    fn one_device_topology() -> Topology {
        let source = "machine: {memory: 1G, maxmem: 2G}\nmemory_backends: [{id: m0, size: 256M}]\nhost_bridges:\n  - id: hb\n    bus_nr: 1\n    root_ports:\n      - {id: rp, port: 0, chassis: 0, slot: 0, type3: {id: d, serial: 1, volatile: m0}}\n";
        cxl_lab_model::parse_profile("t.yaml", source, "t").unwrap()
    }

    #[test]
    fn sizes_new_and_stale_files_exactly() {
        let topology = one_device_topology();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m0.raw"), b"stale and short").unwrap();
        let files = prepare_backend_files(&topology, &topology.hosts[0], dir.path()).unwrap();
        assert_eq!(files, vec![dir.path().join("m0.raw")]);
        assert_eq!(std::fs::metadata(&files[0]).unwrap().len(), 256 << 20);
    }

    /// A topology built without the validator still cannot size a file outside the directory.
    #[test]
    fn refuses_backend_ids_that_leave_the_memory_directory() {
        let mut topology = one_device_topology();
        let root = tempfile::tempdir().unwrap();
        let memory_dir = root.path().join("memory");
        let hostile = "../escaped";
        topology.backends[0].id = hostile.to_owned();
        let Some(cxl_lab_model::Below::Type3(device)) = &mut topology.hosts[0].host_bridges[0].root_ports[0].below else {
            unreachable!("the profile has one device")
        };
        device.volatile.as_mut().unwrap().backend = hostile.to_owned();
        let error = prepare_backend_files(&topology, &topology.hosts[0], &memory_dir).unwrap_err();
        assert_eq!(error.to_string(), format!("memory backend id `../escaped` cannot name a file in {}", memory_dir.display()));
        assert!(!root.path().join("escaped.raw").exists());
        for bad in ["", ".hidden", "a/b", "a\0b", &"m".repeat(MAX_BACKEND_ID_LEN + 1)] {
            assert!(backend_file(&memory_dir, bad).is_err(), "{bad:?}");
        }
    }
}
