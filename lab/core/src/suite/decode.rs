//! The `decode` check's host side: after the guest wrote a tag at the start of every granule of a
//! region (`cxl-lab-guest tag`, [`cxl_lab_guest::granule_tag`]), each granule's tag is read from
//! the memory backend file at the offset the model predicts ([`Region::granules`]: HPA → device,
//! DPA → backend, offset). A granule whose tag is not there is named by its HPA, the device and
//! DPA the model expected it on, and where its tag actually is (found by searching every
//! member's backing file).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use cxl_lab_guest::{granule_tag, tag_text, TAG_BYTES};

use crate::model::decode::{Granule, Region};
use crate::render::backend_file;

/// How many misplaced granules a failure describes (each line names where its tag is).
const DESCRIBED: usize = 8;
/// How much of a backing file the search reads at a time.
const SEARCH_CHUNK: usize = 16 << 20;

/// What a passing check covered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checked {
    pub granules: u64,
    pub bytes: u64,
}

/// One granule whose tag is not where the model puts it.
struct Misplaced {
    index: u64,
    granule: Granule,
    found: [u8; TAG_BYTES],
}

/// Checks that every granule of `region` holds its tag (`label`: the tag's region name) at the
/// offset the model predicts in the backing files under `memory_dir`.
pub fn check_granules(region: &Region, label: &str, memory_dir: &Path) -> Result<Checked, String> {
    let files = open_backing_files(region, memory_dir)?;
    let mut misplaced = Vec::new();
    let mut count = 0u64;
    for (index, granule) in region.granules().enumerate() {
        let index = index as u64;
        count += 1;
        let (path, file) = &files[&granule.backing.backend];
        let mut found = [0u8; TAG_BYTES];
        file.read_exact_at(&mut found, granule.backing.offset)
            .map_err(|error| {
                format!(
                    "reading {} at {:#x}: {error}",
                    path.display(),
                    granule.backing.offset
                )
            })?;
        if found != granule_tag(label, index, granule.hpa) {
            misplaced.push(Misplaced {
                index,
                granule,
                found,
            });
        }
    }
    if misplaced.is_empty() {
        return Ok(Checked {
            granules: count,
            bytes: count * region.granularity,
        });
    }
    let wanted: Vec<String> = misplaced
        .iter()
        .take(DESCRIBED)
        .map(|wrong| tag_text(&granule_tag(label, wrong.index, wrong.granule.hpa)))
        .collect();
    let located = search_tags(&files, label, &wanted)?;
    let mut lines: Vec<String> = misplaced
        .iter()
        .take(DESCRIBED)
        .zip(&wanted)
        .map(|(wrong, tag)| describe(region, wrong, located.get(tag), memory_dir))
        .collect();
    if misplaced.len() > DESCRIBED {
        lines.push(format!("... and {} more", misplaced.len() - DESCRIBED));
    }
    Err(format!(
        "{} of {count} granules do not hold their tag where the model puts them:\n  {}",
        misplaced.len(),
        lines.join("\n  ")
    ))
}

fn describe(
    region: &Region,
    wrong: &Misplaced,
    located: Option<&(String, u64)>,
    memory_dir: &Path,
) -> String {
    let Granule {
        hpa,
        device,
        dpa,
        backing,
        ..
    } = &wrong.granule;
    let file = file_name(memory_dir, &backing.backend);
    let holds = match tag_text(&wrong.found) {
        text if text.is_empty() => "no tag".to_owned(),
        text => format!("`{text}`"),
    };
    let actual = match located {
        Some((backend, offset)) => match owner(region, backend, *offset) {
            Some((owner, owner_dpa)) => format!(
                "its tag is on {owner} at DPA {owner_dpa:#x} ({} offset {offset:#x})",
                file_name(memory_dir, backend)
            ),
            None => format!(
                "its tag is at {} offset {offset:#x}",
                file_name(memory_dir, backend)
            ),
        },
        None => "its tag is in no member's backing file".to_owned(),
    };
    format!("HPA {hpa:#x} (granule {}): the model puts it on {device} at DPA {dpa:#x} ({file} offset {:#x}), which holds {holds}; {actual}", wrong.index, backing.offset)
}

fn file_name(memory_dir: &Path, backend: &str) -> String {
    backend_file(memory_dir, backend)
        .ok()
        .and_then(|path| {
            path.file_name()
                .map(|name| name.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| backend.to_owned())
}

/// The member device and DPA a byte of `backend` is: the inverse of the model's `backing`.
fn owner(region: &Region, backend: &str, offset: u64) -> Option<(String, u64)> {
    region.members().find_map(|device| {
        let volatile_size = device.volatile.as_ref().map_or(0, |volatile| volatile.size);
        match (&device.volatile, &device.persistent) {
            (Some(volatile), _) if volatile.backend == backend => Some((device.id.clone(), offset)),
            (_, Some(persistent)) if persistent.backend == backend => {
                Some((device.id.clone(), volatile_size + offset))
            }
            _ => None,
        }
    })
}

/// Every member's backing file, by backend id, opened for reading.
fn open_backing_files(
    region: &Region,
    memory_dir: &Path,
) -> Result<BTreeMap<String, (PathBuf, File)>, String> {
    let mut files = BTreeMap::new();
    for device in region.members() {
        for used in [&device.volatile, &device.persistent].into_iter().flatten() {
            let path =
                backend_file(memory_dir, &used.backend).map_err(|error| format!("{error:#}"))?;
            let file = File::open(&path).map_err(|error| {
                format!(
                    "opening the backing file of `{}` ({}): {error}",
                    device.id,
                    path.display()
                )
            })?;
            files.insert(used.backend.clone(), (path, file));
        }
    }
    Ok(files)
}

/// Fault injection (`lab run --move-tag`): moves granule `index`'s tag from where the model puts
/// it into the next member's backing file, mid-granule, as a wrong decode would have; what it
/// did, in words.
pub fn move_tag(region: &Region, memory_dir: &Path, index: u64) -> Result<String, String> {
    let granule = region.granules().nth(index as usize).ok_or_else(|| format!("the region has no granule {index}"))?;
    let next = region.members().nth((granule.position + 1) % region.ways()).expect("a position below the ways");
    let target = next.volatile.as_ref().or(next.persistent.as_ref()).expect("a member has capacity");
    let (from, to) = (backend_file(memory_dir, &granule.backing.backend), backend_file(memory_dir, &target.backend));
    let (from, to) = (from.map_err(|error| format!("{error:#}"))?, to.map_err(|error| format!("{error:#}"))?);
    let at = granule.backing.offset + region.granularity / 2;
    let io = |path: &Path, error: std::io::Error| format!("moving a tag in {}: {error}", path.display());
    let source = std::fs::OpenOptions::new().read(true).write(true).open(&from).map_err(|error| io(&from, error))?;
    let mut tag = [0u8; TAG_BYTES];
    source.read_exact_at(&mut tag, granule.backing.offset).map_err(|error| io(&from, error))?;
    source.write_all_at(&[0u8; TAG_BYTES], granule.backing.offset).map_err(|error| io(&from, error))?;
    let destination = std::fs::OpenOptions::new().write(true).open(&to).map_err(|error| io(&to, error))?;
    destination.write_all_at(&tag, at).map_err(|error| io(&to, error))?;
    Ok(format!(
        "fault injected: granule {index}'s tag (HPA {:#x}) moved from {} offset {:#x} to {} offset {at:#x}",
        granule.hpa,
        from.display(),
        granule.backing.offset,
        to.display()
    ))
}

/// Where each of the `wanted` tags (their text) is in the backing files: (backend, offset) of its
/// first copy. One pass over each file, looking for every tag of the region.
fn search_tags(
    files: &BTreeMap<String, (PathBuf, File)>,
    label: &str,
    wanted: &[String],
) -> Result<HashMap<String, (String, u64)>, String> {
    let prefix = format!("cxl-lab {label} granule ");
    let finder = memchr::memmem::Finder::new(prefix.as_bytes());
    let mut located = HashMap::new();
    let mut chunk = vec![0u8; SEARCH_CHUNK + TAG_BYTES];
    for (backend, (path, file)) in files {
        let mut start = 0u64;
        loop {
            let read = read_at_most(file, &mut chunk, start)
                .map_err(|error| format!("searching {}: {error}", path.display()))?;
            if read == 0 {
                break;
            }
            for at in finder.find_iter(&chunk[..read]) {
                let text = tag_text(&chunk[at..(at + TAG_BYTES).min(read)]);
                if wanted.contains(&text) {
                    located
                        .entry(text)
                        .or_insert_with(|| (backend.clone(), start + at as u64));
                }
            }
            if read < chunk.len() {
                break;
            }
            // The next chunk overlaps this one by a tag, so no tag is cut in two.
            start += SEARCH_CHUNK as u64;
        }
    }
    Ok(located)
}

/// Fills `buffer` from `offset` as far as the file goes; the bytes read.
fn read_at_most(file: &File, buffer: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read_at(&mut buffer[filled..], offset + filled as u64)? {
            0 => break,
            read => filled += read,
        }
    }
    Ok(filled)
}

/// The region's base from `cxl create-region`'s JSON (`resource`, hex text or a number).
pub fn region_resource(created: &serde_json::Value) -> Result<u64, String> {
    let region = created
        .as_array()
        .and_then(|regions| regions.first())
        .unwrap_or(created);
    match region.get("resource") {
        Some(serde_json::Value::String(text)) => crate::model::decode::parse_address(text),
        Some(value) => value
            .as_u64()
            .ok_or_else(|| format!("the region's resource is not an address: {value}")),
        None => Err(format!(
            "`cxl create-region` printed no resource: {created}"
        )),
    }
}

/// Prints a device's first HPA and its size in bytes (two lines): a DAX device's or a pmem
/// block device's namespace's, from sysfs.
pub fn extent_script(device: &str) -> String {
    if device.starts_with("dax") {
        format!("cat /sys/bus/dax/devices/{device}/resource /sys/bus/dax/devices/{device}/size")
    } else {
        format!("cat /sys/block/{device}/device/resource /sys/block/{device}/device/size")
    }
}

/// [`extent_script`]'s output: (first HPA, size).
pub fn parse_extent(output: &str) -> Result<(u64, u64), String> {
    let values: Vec<u64> = output
        .split_whitespace()
        .map(crate::model::decode::parse_address)
        .collect::<Result<_, _>>()?;
    match values.as_slice() {
        [start, size] => Ok((*start, *size)),
        _ => Err(format!(
            "expected a start and a size, the guest printed `{}`",
            output.trim()
        )),
    }
}

/// `cxl-lab-guest tag` for the region's every granule, through `device` (offset 0 = `base`).
pub fn tag_command(tool: &str, device: &str, label: &str, region: &Region) -> String {
    format!(
        "{tool} tag /dev/{device} {label} {:#x} {} {}",
        region.base,
        region.granularity,
        region.size / region.granularity
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::decode::Region;

    /// The shipped `interleave` profile: 4 ways over 2 host bridges × 2 root ports, 8 KiB.
    fn interleave() -> crate::profile::Profile {
        let layout = crate::layout::Layout::for_workspace(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."),
        );
        crate::profile::load(&layout, "interleave").unwrap()
    }

    /// Writes every granule's tag into sparse backing files the way a device lays out its
    /// memory: by the model's DPA and backend offset (QEMU's device reads and writes its
    /// backend's bytes at DPA order).
    fn tagged_files(region: &Region, dir: &Path) {
        for device in region.members() {
            let file = File::create(
                backend_file(dir, &device.persistent.as_ref().unwrap().backend).unwrap(),
            )
            .unwrap();
            file.set_len(256 << 20).unwrap();
        }
        for (index, granule) in region.granules().enumerate() {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(backend_file(dir, &granule.backing.backend).unwrap())
                .unwrap();
            file.write_all_at(
                &granule_tag("region0", index as u64, granule.hpa),
                granule.backing.offset,
            )
            .unwrap();
        }
    }

    #[test]
    fn every_granule_is_checked_and_a_moved_tag_names_its_hpa_and_device() {
        let profile = interleave();
        // Where the source stack's Linux put the region in a real run: 256 MiB-aligned only.
        let region = Region::over_window(&profile.topology.hosts[0], 0, 0x4_9000_0000)
            .unwrap()
            .placed_at(0x4_9000_0000)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        tagged_files(&region, dir.path());
        assert_eq!(
            check_granules(&region, "region0", dir.path()),
            Ok(Checked {
                granules: 131072,
                bytes: 1 << 30
            })
        );

        // Granule 5 (HPA base + 40 KiB: position 1, cxl-pmem2, DPA 8 KiB) moved into the next
        // member, cxl-pmem1, mid-granule (no other tag overwritten).
        let moved = move_tag(&region, dir.path(), 5).unwrap();
        assert!(moved.contains("granule 5's tag (HPA 0x49000a000) moved from"), "{moved}");
        let error = check_granules(&region, "region0", dir.path()).unwrap_err();
        assert_eq!(
            error,
            "1 of 131072 granules do not hold their tag where the model puts them:\n  \
             HPA 0x49000a000 (granule 5): the model puts it on cxl-pmem2 at DPA 0x2000 (cxl-mem2.raw offset 0x2000), which holds no tag; \
             its tag is on cxl-pmem1 at DPA 0x3000 (cxl-mem1.raw offset 0x3000)"
        );
    }

    #[test]
    fn the_region_base_and_a_device_extent_come_from_the_guest() {
        assert_eq!(
            region_resource(&serde_json::json!({"region": "region0", "resource": "0x390000000"})),
            Ok(0x3_9000_0000)
        );
        assert_eq!(
            region_resource(&serde_json::json!([{"resource": 4096}])),
            Ok(4096)
        );
        assert_eq!(
            parse_extent("0x390000000\n1073741824\n"),
            Ok((0x3_9000_0000, 1 << 30))
        );
        assert!(parse_extent("0x1\n").is_err());
    }
}
