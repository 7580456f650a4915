//! Snapshots of what `cargo xtask model decode` prints for every shipped profile: the region over
//! each window (or why Linux cannot build one) and the path of a few addresses. Review changes
//! with `cargo insta review`; a changed path is a changed decode.

use std::path::{Path, PathBuf};

use cxl_lab_core::model::decode::{report, Region};
use cxl_lab_core::profile::load_topology;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The first byte, a byte inside the second granule, and the last byte of the region.
fn sample_addresses(region: &Region<'_>) -> [u64; 3] {
    [region.base, region.base + region.granularity + 5, region.end() - 1]
}

fn decode_text(name: &str) -> String {
    let file = format!("profiles/{name}.yaml");
    let topology = load_topology(&workspace().join(&file)).unwrap();
    let mut text = String::new();
    for host in &topology.hosts {
        for window_index in 0..host.windows.len() {
            match Region::in_profile(&topology, &file, Some(&host.name), window_index, 0) {
                Ok(region) => {
                    text.push_str(&report::region_text(&region));
                    for hpa in sample_addresses(&region) {
                        text.push_str(&report::path_text(&region.decode(hpa).unwrap()));
                    }
                }
                Err(error) => text.push_str(&format!("{error}\n")),
            }
        }
    }
    text
}

#[test]
fn decode_of_every_shipped_profile() {
    for name in ["dcd", "interleave", "mixed", "seed", "shared", "switch", "volatile"] {
        insta::assert_snapshot!(format!("decode_{name}"), decode_text(name));
    }
}

#[test]
fn dpa_of_the_interleave_profile_comes_back_to_its_hpa() {
    let topology = load_topology(&workspace().join("profiles/interleave.yaml")).unwrap();
    let region = Region::in_profile(&topology, "interleave.yaml", None, 0, 0).unwrap();
    let hpa = region.encode("102", 0x2000).unwrap();
    insta::assert_snapshot!(report::path_text(&region.decode(hpa).unwrap()));
}
