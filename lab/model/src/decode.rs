//! Where every byte of an interleaved region lives: host physical address (HPA) to (host bridge,
//! root port, switch port, device, device physical address (DPA), backing file, offset) and back.
//!
//! A region is a window, a granularity G and member devices in position order. Each level of the
//! hierarchy is a decoder with `ways` targets: the window (CFMWS) picks a host bridge, the host
//! bridge's HDM decoder a root port, a switch's HDM decoder a downstream port. As QEMU implements
//! it (`hw/cxl/cxl-host.c` `cxl_cfmws_find_device`, `cxl_hdm_find_target`), a level picks target
//! `(HPA / g) mod ways` of the absolute HPA, where Linux programs each level's granularity as
//! `g = G × the ways of every level above` (`drivers/cxl/core/region.c`
//! `cxl_port_setup_targets`). The endpoint (`hw/mem/cxl_type3.c` `cxl_type3_dpa`) keeps the bits
//! below G and divides the rest by the region's total ways W:
//! `DPA = dpa_base + (off mod G) + floor(off / (G·W))·G`, `off = HPA - region base`, for 3, 6
//! and 12 ways too (QEMU 10.0's `/ 3` branch). Linux aligns a region to 256 MiB (the source
//! stack's kernel put a 4-way region at 0x490000000, not at a 1 GiB boundary;
//! [`Region::placed_at`] moves the model there), a multiple of every level's G × ways, so the
//! absolute and the region-relative arithmetic agree.
//!
//! Pure: a suite asks [`Region::decode`] and [`Region::granules`] and reads the files itself.

use serde::Serialize;

use crate::error::ProfileError;
use crate::size::{ByteSize, KIB, MIB};
use crate::topology::{DevicePlacement, FixedWindow, Host, Port, SourceAt, Topology, Type3Device};

pub mod report;

/// Linux allocates device capacity to a region and aligns regions in units of 256 MiB
/// (`SZ_256M` in `drivers/cxl/core/hdm.c` and `region.c`); an HDM decoder's base and size
/// registers have the same unit (CXL 3.1 §8.2.4.20.5).
pub const DECODER_UNIT: u64 = 256 * MIB;
/// The granularity Linux gives every one-way root decoder (`CXL_DECODER_MIN_GRANULARITY`).
pub const ONE_WAY_GRANULARITY: u64 = 256;

/// The granularity G of a region over `window`, as Linux shows the root decoder and as `cxl
/// create-region` takes it by default: the window's own for an interleaved window; for a one-way
/// window 256, whatever the CFMWS says, "to advertise support for any valid region granularity"
/// (`drivers/cxl/acpi.c`), so the levels below interleave at 256.
pub fn region_granularity(window: &FixedWindow) -> u64 {
    if window.targets.len() == 1 { ONE_WAY_GRANULARITY } else { window.granularity }
}

/// The largest granularity an HDM decoder encodes (CXL 3.1 §8.2.4.20.7, IG field 0..=6).
pub const MAX_DECODER_GRANULARITY: u64 = 16 * KIB;
/// Interleave ways an HDM decoder encodes (CXL 3.1 §8.2.4.20.7, IW field; 3, 6, 12 as 8, 9, 10).
pub const DECODER_WAYS: [usize; 8] = [1, 2, 4, 8, 16, 3, 6, 12];

/// The partition of each device a region uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RegionMode {
    Ram,
    Pmem,
}

impl RegionMode {
    pub fn name(self) -> &'static str {
        match self {
            RegionMode::Ram => "ram",
            RegionMode::Pmem => "pmem",
        }
    }
}

/// Why Linux could not build a region over a window: a suite skips such a window with this.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoRegion {
    #[error("the window has no member device")]
    NoMembers,
    #[error("device `{0}` is listed twice")]
    DuplicateMember(String),
    #[error("`{0}` is not a type-3 device of this host")]
    UnknownDevice(String),
    #[error("position {position}: `{device}` is below host bridge `{found}`, but the window sends position {position} to `{expected}`")]
    WrongHostBridge { position: usize, device: String, expected: String, found: String },
    #[error("position {position}: `{device}` is below `{found}`, but `{decoder}` already sends that slot to `{expected}`")]
    SlotTaken { position: usize, device: String, decoder: String, expected: String, found: String },
    #[error("the {level} level is uneven: {detail}")]
    Uneven { level: &'static str, detail: String },
    #[error("{members} members, but the levels multiply to {product} ways")]
    WaysMismatch { members: usize, product: usize },
    #[error("{level} interleaves {ways} ways, which an HDM decoder cannot encode (1, 2, 4, 8, 16, 3, 6, 12)")]
    WaysNotEncodable { level: &'static str, ways: usize },
    #[error("{level} needs granularity {granularity} (G × the ways above), above the decoder maximum {max}", granularity = ByteSize(*.granularity), max = ByteSize(MAX_DECODER_GRANULARITY))]
    GranularityNotEncodable { level: &'static str, granularity: u64 },
    #[error("an interleaved window fixes the region's granularity at its own, {}, not {}", ByteSize(*.window), ByteSize(*.granularity))]
    GranularityFixed { window: u64, granularity: u64 },
    #[error("the members have neither all volatile nor all persistent capacity (dynamic capacity regions are not modelled)")]
    MixedModes,
    #[error("`{device}` has {} of {mode:?} capacity, below the {} decoder unit", ByteSize(*.capacity), ByteSize(DECODER_UNIT))]
    DeviceBelowUnit { device: String, mode: RegionMode, capacity: u64 },
    #[error("a {ways}-way region needs {} of window ({} per device) but the window has {}: each device would get {}", ByteSize(DECODER_UNIT * *.ways as u64), ByteSize(DECODER_UNIT), ByteSize(*.room), ByteSize(*.room / *.ways as u64))]
    WindowTooSmall { ways: usize, room: u64 },
}

/// An address the region does not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("HPA {hpa:#x} is outside the region [{base:#x}, {end:#x})")]
    HpaOutsideRegion { hpa: u64, base: u64, end: u64 },
    #[error("no member device `{0}` (give a QEMU id or a serial)")]
    NotAMember(String),
    #[error("DPA {dpa:#x} of `{device}` is outside the region's part of it [{start:#x}, {end:#x})")]
    DpaOutsideRegion { device: String, dpa: u64, start: u64, end: u64 },
}

/// One decoder level, as programmed for this region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Level {
    pub name: &'static str,
    pub ways: usize,
    /// The granularity this level's decoder interleaves at: G × the ways of the levels above.
    pub granularity: u64,
}

impl Level {
    /// The target this level's decoder picks for `hpa`, as QEMU does: absolute address, modulo.
    pub fn target_index(&self, hpa: u64) -> usize {
        ((hpa / self.granularity) % self.ways as u64) as usize
    }
}

/// One decoder along an HPA's path: whose decoder, which target it chose.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Hop {
    pub level: Level,
    /// The id of the decoder's owner: the window (`cxl-fmw.N`), a host bridge or a switch.
    pub decoder: String,
    pub target_index: usize,
    /// The id of the chosen target: a host bridge, root port or downstream port.
    pub target: String,
    /// The target's port number, for ports (the id in decoder target lists).
    pub port: Option<u8>,
}

/// Where a DPA's bytes are: the memory backend (its file is `<id>.raw`) and the offset in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Backing {
    pub backend: String,
    pub offset: u64,
}

/// An HPA decoded level by level.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decoded {
    pub hpa: u64,
    /// Offset from the region's base.
    pub offset: u64,
    /// The member's position in the region (`(offset / G) mod W`).
    pub position: usize,
    /// Window, host bridge and (below a switch) switch, in that order.
    pub hops: Vec<Hop>,
    pub device: String,
    pub serial: u64,
    pub dpa: u64,
    pub backing: Backing,
}

/// One granule of the region: `granularity` bytes at `hpa`, all on one device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Granule {
    pub hpa: u64,
    pub position: usize,
    pub device: String,
    pub dpa: u64,
    pub backing: Backing,
}

/// A region over one window, as Linux would program it.
#[derive(Clone, Debug)]
pub struct Region<'t> {
    pub host: &'t Host,
    pub window_index: usize,
    pub base: u64,
    pub size: u64,
    pub granularity: u64,
    pub mode: RegionMode,
    /// Window, host bridge, switch (when the members sit below switches).
    pub levels: Vec<Level>,
    members: Vec<DevicePlacement<'t>>,
    /// Each decoder's target list below the window, as Linux programs it.
    slots: Vec<Slot>,
}

/// One entry of a decoder's target list: `decoder` sends target `index` to port `child`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Slot {
    decoder: String,
    index: usize,
    child: String,
    port: u8,
}

/// An address as people write it: `0x1f00`, `4096`, `4G`.
pub fn parse_address(text: &str) -> Result<u64, String> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).map_err(|error| format!("`{text}` is not a hexadecimal address: {error}")),
        None => ByteSize::parse(text).map(ByteSize::bytes),
    }
}

/// `DEVICE:ADDR`, the device by QEMU id or serial.
pub fn parse_device_address(text: &str) -> Result<(String, u64), String> {
    let (device, address) = text.rsplit_once(':').ok_or_else(|| format!("`{text}` is not DEVICE:ADDR (a QEMU id or serial, then a DPA)"))?;
    Ok((device.to_owned(), parse_address(address)?))
}

/// The window's QEMU name, as in `-M cxl-fmw.N`.
pub fn window_name(window_index: usize) -> String {
    format!("cxl-fmw.{window_index}")
}

impl<'t> Region<'t> {
    /// The region over window `window_index` of the host named `host` (the first host when
    /// `None`); why there is none is an error at the window in `file`.
    pub fn in_profile(
        topology: &'t Topology,
        file: &str,
        host: Option<&str>,
        window_index: usize,
        window_base: u64,
    ) -> Result<Region<'t>, ProfileError> {
        let start = |field: &str| SourceAt { field: field.to_owned(), line: 1, column: 1 };
        let chosen = match host {
            Some(name) => topology.hosts.iter().find(|candidate| candidate.name == name),
            None => topology.hosts.first(),
        };
        let Some(chosen) = chosen else {
            let names: Vec<&str> = topology.hosts.iter().map(|candidate| candidate.name.as_str()).collect();
            return Err(ProfileError::at(file, &start("hosts"), format!("no host `{}` (hosts: {})", host.unwrap_or_default(), names.join(", "))));
        };
        let Some(window) = chosen.windows.get(window_index) else {
            let message = format!("host `{}` has {} fixed window(s): no window {window_index}", chosen.name, chosen.windows.len());
            return Err(ProfileError::at(file, &start("fixed_windows"), message));
        };
        Region::over_window(chosen, window_index, window_base)
            .map_err(|reason| ProfileError::at(file, &window.at, format!("Linux cannot build a region over this window: {reason}")))
    }

    /// The region Linux builds over window `window_index` from every device below its host
    /// bridges, in the canonical position order (host bridge fastest, then root port, then
    /// switch port). `window_base` is the window's HPA (the root decoder's `resource` in
    /// `cxl list -D`; 0 to work in window offsets).
    pub fn over_window(host: &'t Host, window_index: usize, window_base: u64) -> Result<Region<'t>, NoRegion> {
        let window = &host.windows[window_index];
        let members = canonical_members(host, window)?;
        let ids: Vec<&str> = members.iter().map(|placement| placement.device.id.as_str()).collect();
        Region::with_members(host, window_index, window_base, &ids)
    }

    /// A region over window `window_index` with `members` (device ids) in position order; refused
    /// with the reason when Linux could not program it.
    pub fn with_members(host: &'t Host, window_index: usize, window_base: u64, members: &[&str]) -> Result<Region<'t>, NoRegion> {
        let window = &host.windows[window_index];
        let placements = member_placements(host, members)?;
        let levels = check_levels(window, &placements, region_granularity(window))?;
        let slots = target_slots(&levels, &placements)?;
        let mode = region_mode(&placements)?;
        let ways = placements.len();
        let base = window_base.next_multiple_of(DECODER_UNIT * ways as u64);
        let room = (window_base + window.size).saturating_sub(base);
        let size = region_size(&placements, mode, room)?;
        Ok(Region { host, window_index, base, size, granularity: region_granularity(window), mode, levels, members: placements, slots })
    }

    /// The same region at another granularity G: what `cxl create-region -g` may choose below a
    /// one-way window (any encodable G, `interleave_granularity_store` in
    /// `drivers/cxl/core/region.c`); an interleaved window fixes G at its own.
    pub fn with_granularity(self, granularity: u64) -> Result<Region<'t>, NoRegion> {
        let window = &self.host.windows[self.window_index];
        if window.targets.len() > 1 && granularity != window.granularity {
            return Err(NoRegion::GranularityFixed { window: window.granularity, granularity });
        }
        if !granularity.is_power_of_two() || !(ONE_WAY_GRANULARITY..=MAX_DECODER_GRANULARITY).contains(&granularity) {
            return Err(NoRegion::GranularityNotEncodable { level: "the region", granularity });
        }
        let levels = check_levels(window, &self.members, granularity)?;
        let slots = target_slots(&levels, &self.members)?;
        Ok(Region { granularity, levels, slots, ..self })
    }

    /// The same region at `base`, where the guest's Linux put it (its `resource`): Linux aligns
    /// a region to the 256 MiB unit only (`alloc_free_mem_region(..., SZ_256M, ...)` in
    /// `drivers/cxl/core/region.c`), which may be below the 256 MiB × W this model assumes; any
    /// multiple of the unit is a multiple of every level's granularity × ways, so the
    /// arithmetic holds there. `None` off the unit.
    pub fn placed_at(mut self, base: u64) -> Option<Region<'t>> {
        self.base = base;
        (base % DECODER_UNIT == 0).then_some(self)
    }

    pub fn ways(&self) -> usize {
        self.members.len()
    }

    pub fn end(&self) -> u64 {
        self.base + self.size
    }

    /// Member devices in position order.
    pub fn members(&self) -> impl Iterator<Item = &Type3Device> {
        self.members.iter().map(|placement| placement.device)
    }

    /// The first DPA of each member that the region uses: pmem follows the volatile partition.
    fn dpa_base(&self, device: &Type3Device) -> u64 {
        match self.mode {
            RegionMode::Ram => 0,
            RegionMode::Pmem => device.volatile.as_ref().map_or(0, |volatile| volatile.size),
        }
    }

    /// The bytes of each device the region uses.
    pub fn per_device(&self) -> u64 {
        self.size / self.ways() as u64
    }

    /// HPA -> the path down to the device and the byte in its backing file.
    pub fn decode(&self, hpa: u64) -> Result<Decoded, DecodeError> {
        let (position, dpa) = self.locate(hpa)?;
        let (hops, device) = self.walk(hpa);
        Ok(Decoded { hpa, offset: hpa - self.base, position, hops, device: device.id.clone(), serial: device.serial, dpa, backing: backing(device, dpa) })
    }

    /// HPA -> (position, DPA) by the endpoint arithmetic alone, without the path: what a
    /// check of every granule needs.
    pub fn locate(&self, hpa: u64) -> Result<(usize, u64), DecodeError> {
        if hpa < self.base || hpa >= self.end() {
            return Err(DecodeError::HpaOutsideRegion { hpa, base: self.base, end: self.end() });
        }
        let offset = hpa - self.base;
        let (granularity, ways) = (self.granularity, self.ways() as u64);
        let position = ((offset / granularity) % ways) as usize;
        let device = self.members[position].device;
        Ok((position, self.dpa_base(device) + offset % granularity + offset / (granularity * ways) * granularity))
    }

    /// Each level's decoder and the target it picks for `hpa`, walking the programmed target
    /// lists from the window down as QEMU does, and the device the walk ends at.
    fn walk(&self, hpa: u64) -> (Vec<Hop>, &'t Type3Device) {
        let window = &self.host.windows[self.window_index];
        let window_level = self.levels[0];
        let host_bridge_index = window_level.target_index(hpa);
        let mut decoder = window.targets[host_bridge_index].clone();
        let mut hops = vec![Hop {
            level: window_level,
            decoder: window_name(self.window_index),
            target_index: host_bridge_index,
            target: decoder.clone(),
            port: None,
        }];
        for level in &self.levels[1..] {
            let target_index = level.target_index(hpa);
            let slot = self.slot(&decoder, target_index);
            hops.push(Hop { level: *level, decoder, target_index, target: slot.child.clone(), port: Some(slot.port) });
            decoder = self.switch_below(&slot.child).unwrap_or_default();
        }
        let device = self.device_below(&hops[hops.len() - 1].target);
        (hops, device)
    }

    fn slot(&self, decoder: &str, index: usize) -> &Slot {
        self.slots
            .iter()
            .find(|slot| slot.decoder == decoder && slot.index == index)
            .expect("every target of a programmed decoder leads to a member")
    }

    /// The switch below a root port, when there is one: the next decoder on the path.
    fn switch_below(&self, root_port: &str) -> Option<String> {
        self.members.iter().find(|placement| placement.root_port.id == root_port)?.switch.map(|(switch, _)| switch.id.clone())
    }

    fn device_below(&self, port: &str) -> &'t Type3Device {
        let placement = self.members.iter().find(|placement| placement.parent_port().id == port);
        placement.expect("every path ends at a member").device
    }

    /// (device by id or serial, DPA) -> HPA: the inverse of [`Region::decode`].
    pub fn encode(&self, device: &str, dpa: u64) -> Result<u64, DecodeError> {
        let position = self.position_of(device).ok_or_else(|| DecodeError::NotAMember(device.to_owned()))?;
        let member = self.members[position].device;
        let start = self.dpa_base(member);
        let local = dpa.checked_sub(start).filter(|local| *local < self.per_device());
        let Some(local) = local else {
            return Err(DecodeError::DpaOutsideRegion { device: member.id.clone(), dpa, start, end: start + self.per_device() });
        };
        let (granularity, ways) = (self.granularity, self.ways() as u64);
        Ok(self.base + ((local / granularity) * ways + position as u64) * granularity + local % granularity)
    }

    /// The position of a member named by QEMU id or serial.
    pub fn position_of(&self, device: &str) -> Option<usize> {
        let serial: Option<u64> = device.parse().ok();
        self.members
            .iter()
            .position(|placement| placement.device.id == device || Some(placement.device.serial) == serial)
    }

    /// Every granule of the region, in HPA order.
    pub fn granules(&self) -> impl Iterator<Item = Granule> + '_ {
        let count = self.size / self.granularity;
        (0..count).map(move |index| {
            let hpa = self.base + index * self.granularity;
            let (position, dpa) = self.locate(hpa).expect("a granule of the region is inside it");
            let device = self.members[position].device;
            Granule { hpa, position, device: device.id.clone(), dpa, backing: backing(device, dpa) }
        })
    }
}

/// Which backend holds `dpa`, as QEMU's `cxl_type3_hpa_to_as_and_dpa` decides: the volatile
/// backend first, then the persistent one after it.
pub fn backing(device: &Type3Device, dpa: u64) -> Backing {
    let volatile_size = device.volatile.as_ref().map_or(0, |volatile| volatile.size);
    let (used, offset) = match (&device.volatile, &device.persistent) {
        (Some(volatile), _) if dpa < volatile_size => (volatile, dpa),
        (_, Some(persistent)) => (persistent, dpa - volatile_size),
        (Some(volatile), None) => (volatile, dpa),
        (None, None) => unreachable!("a region member has volatile or persistent capacity"),
    };
    Backing { backend: used.backend.clone(), offset }
}

/// The devices below the window's host bridges in position order: position p sits below host
/// bridge `p mod W_window`, its root port `(p / W_window) mod W_hb`, its switch port
/// `(p / (W_window·W_hb)) mod W_switch` (the order `cxl_port_setup_targets` requires).
fn canonical_members<'t>(host: &'t Host, window: &FixedWindow) -> Result<Vec<DevicePlacement<'t>>, NoRegion> {
    let devices = host.devices();
    let below = |host_bridge: &str| -> Vec<DevicePlacement<'t>> {
        devices.iter().copied().filter(|placement| placement.host_bridge.id == host_bridge).collect()
    };
    let per_bridge: Vec<Vec<DevicePlacement<'t>>> = window.targets.iter().map(|target| below(target)).collect();
    let total: usize = per_bridge.iter().map(Vec::len).sum();
    if total == 0 {
        return Err(NoRegion::NoMembers);
    }
    let window_ways = window.targets.len();
    let each = per_bridge[0].len();
    if per_bridge.iter().any(|devices| devices.len() != each) {
        let counts: Vec<String> = per_bridge.iter().map(|devices| devices.len().to_string()).collect();
        let detail = format!("the window's host bridges hold {} devices", counts.join(", "));
        return Err(NoRegion::Uneven { level: "host bridge", detail });
    }
    // Profile order is root port, then switch port: index `k` below a bridge is
    // (root port fastest) k = rp + W_hb·sw, so list them that way.
    let root_ports = distinct_count(&per_bridge[0], |placement| placement.root_port.id.clone());
    let ordered: Vec<Vec<DevicePlacement<'t>>> = per_bridge.iter().map(|devices| root_port_fastest(devices, root_ports)).collect();
    Ok((0..total).map(|position| ordered[position % window_ways][position / window_ways]).collect())
}

/// Devices of one host bridge reordered so that the root port changes fastest.
fn root_port_fastest<'t>(devices: &[DevicePlacement<'t>], root_ports: usize) -> Vec<DevicePlacement<'t>> {
    let per_port = devices.len() / root_ports.max(1);
    (0..devices.len()).map(|index| devices[(index % root_ports) * per_port + index / root_ports]).collect()
}

fn distinct_count<T: PartialEq>(placements: &[DevicePlacement<'_>], key: impl Fn(&DevicePlacement<'_>) -> T) -> usize {
    let mut seen: Vec<T> = Vec::new();
    for placement in placements {
        let value = key(placement);
        if !seen.contains(&value) {
            seen.push(value);
        }
    }
    seen.len()
}

fn member_placements<'t>(host: &'t Host, members: &[&str]) -> Result<Vec<DevicePlacement<'t>>, NoRegion> {
    if members.is_empty() {
        return Err(NoRegion::NoMembers);
    }
    let devices = host.devices();
    let mut placements: Vec<DevicePlacement<'t>> = Vec::with_capacity(members.len());
    for member in members {
        let placement = devices
            .iter()
            .find(|placement| placement.device.id == *member)
            .ok_or_else(|| NoRegion::UnknownDevice((*member).to_owned()))?;
        if placements.iter().any(|seen| seen.device.id == *member) {
            return Err(NoRegion::DuplicateMember((*member).to_owned()));
        }
        placements.push(*placement);
    }
    Ok(placements)
}

/// The levels' ways and granularities, checking that every position sits where the decoders
/// above it send it and that each decoder can encode its ways and granularity.
fn check_levels(window: &FixedWindow, placements: &[DevicePlacement<'_>], granularity: u64) -> Result<Vec<Level>, NoRegion> {
    let window_ways = window.targets.len();
    for (position, placement) in placements.iter().enumerate() {
        let expected = &window.targets[position % window_ways];
        if placement.host_bridge.id != *expected {
            return Err(NoRegion::WrongHostBridge {
                position,
                device: placement.device.id.clone(),
                expected: expected.clone(),
                found: placement.host_bridge.id.clone(),
            });
        }
    }
    let host_bridge_ways = uniform_fan_out("host bridge", placements, |placement| {
        Some((placement.host_bridge.id.clone(), placement.root_port.id.clone()))
    })?;
    let below_switch = placements.iter().filter(|placement| placement.switch.is_some()).count();
    if below_switch != 0 && below_switch != placements.len() {
        let detail = format!("{below_switch} of {} members are below a switch", placements.len());
        return Err(NoRegion::Uneven { level: "switch", detail });
    }
    let mut levels = vec![
        Level { name: "window", ways: window_ways, granularity },
        Level { name: "host bridge", ways: host_bridge_ways, granularity: granularity * window_ways as u64 },
    ];
    if below_switch != 0 {
        let switch_ways = uniform_fan_out("switch", placements, |placement| {
            placement.switch.map(|(switch, downstream)| (switch.id.clone(), downstream.id.clone()))
        })?;
        let granularity = levels[1].granularity * host_bridge_ways as u64;
        levels.push(Level { name: "switch", ways: switch_ways, granularity });
    }
    check_encodable(&levels, placements.len())?;
    Ok(levels)
}

/// How many distinct children each decoder of a level uses; the same for every decoder.
fn uniform_fan_out(
    level: &'static str,
    placements: &[DevicePlacement<'_>],
    decoder_and_child: impl Fn(&DevicePlacement<'_>) -> Option<(String, String)>,
) -> Result<usize, NoRegion> {
    let mut children: Vec<(String, Vec<String>)> = Vec::new();
    for (decoder, child) in placements.iter().filter_map(decoder_and_child) {
        match children.iter_mut().find(|(seen, _)| *seen == decoder) {
            Some((_, list)) if !list.contains(&child) => list.push(child),
            Some(_) => {}
            None => children.push((decoder, vec![child])),
        }
    }
    let first = children.first().map_or(1, |(_, list)| list.len());
    if children.iter().any(|(_, list)| list.len() != first) {
        let counts: Vec<String> = children.iter().map(|(decoder, list)| format!("`{decoder}` {}", list.len())).collect();
        return Err(NoRegion::Uneven { level, detail: format!("targets per decoder: {}", counts.join(", ")) });
    }
    Ok(first)
}

fn check_encodable(levels: &[Level], members: usize) -> Result<(), NoRegion> {
    let product: usize = levels.iter().map(|level| level.ways).product();
    if product != members {
        return Err(NoRegion::WaysMismatch { members, product });
    }
    if !DECODER_WAYS.contains(&members) {
        return Err(NoRegion::WaysNotEncodable { level: "the region", ways: members });
    }
    for level in levels {
        if !DECODER_WAYS.contains(&level.ways) {
            return Err(NoRegion::WaysNotEncodable { level: level.name, ways: level.ways });
        }
        // A one-way decoder passes everything through; its granularity is never used.
        if level.ways > 1 && level.granularity > MAX_DECODER_GRANULARITY {
            return Err(NoRegion::GranularityNotEncodable { level: level.name, granularity: level.granularity });
        }
    }
    Ok(())
}

/// Every decoder below the window sends slot `(p / ways above) mod ways` to one child only:
/// the target lists Linux programs, refused when two positions need one slot.
fn target_slots(levels: &[Level], placements: &[DevicePlacement<'_>]) -> Result<Vec<Slot>, NoRegion> {
    let mut slots: Vec<Slot> = Vec::new();
    for (position, placement) in placements.iter().enumerate() {
        let mut ways_above = levels[0].ways;
        for (level, (decoder, port)) in levels[1..].iter().zip(decoder_path(placement)) {
            let slot = Slot { decoder: decoder.to_owned(), index: (position / ways_above) % level.ways, child: port.id.clone(), port: port.port };
            ways_above *= level.ways;
            match slots.iter().find(|seen| seen.decoder == slot.decoder && seen.index == slot.index) {
                Some(seen) if seen.child != slot.child => {
                    return Err(NoRegion::SlotTaken {
                        position,
                        device: placement.device.id.clone(),
                        decoder: slot.decoder,
                        expected: seen.child.clone(),
                        found: slot.child,
                    })
                }
                Some(_) => {}
                None => slots.push(slot),
            }
        }
    }
    Ok(slots)
}

/// The decoders below the window on a device's path, each with the port it leads to.
fn decoder_path<'p>(placement: &'p DevicePlacement<'_>) -> Vec<(&'p str, &'p Port)> {
    let mut path = vec![(placement.host_bridge.id.as_str(), placement.root_port)];
    if let Some((switch, downstream)) = placement.switch {
        path.push((switch.id.as_str(), downstream));
    }
    path
}

/// Ram when every member has volatile capacity, else pmem when every member has persistent.
fn region_mode(placements: &[DevicePlacement<'_>]) -> Result<RegionMode, NoRegion> {
    if placements.iter().all(|placement| placement.device.volatile.is_some()) {
        Ok(RegionMode::Ram)
    } else if placements.iter().all(|placement| placement.device.persistent.is_some()) {
        Ok(RegionMode::Pmem)
    } else {
        Err(NoRegion::MixedModes)
    }
}

/// The largest region: whole decoder units of every member, at most what the window holds.
fn region_size(placements: &[DevicePlacement<'_>], mode: RegionMode, room: u64) -> Result<u64, NoRegion> {
    let ways = placements.len() as u64;
    let mut per_device = u64::MAX;
    for placement in placements {
        let device = placement.device;
        let partition = match mode {
            RegionMode::Ram => &device.volatile,
            RegionMode::Pmem => &device.persistent,
        };
        let capacity = partition.as_ref().map_or(0, |backend| backend.size);
        if capacity < DECODER_UNIT {
            return Err(NoRegion::DeviceBelowUnit { device: device.id.clone(), mode, capacity });
        }
        per_device = per_device.min(capacity / DECODER_UNIT * DECODER_UNIT);
    }
    let window_units = room / (DECODER_UNIT * ways);
    if window_units == 0 {
        return Err(NoRegion::WindowTooSmall { ways: placements.len(), room });
    }
    Ok(per_device.min(window_units * DECODER_UNIT) * ways)
}

#[cfg(test)]
mod tests;
