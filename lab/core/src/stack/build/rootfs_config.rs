//! What cxl-lab changes in a debootstrapped tree, as lists of [`ConfigItem`]s (pure,
//! snapshot-tested) applied without chroot or mount: [`scrub`] before the tree is published, so
//! that two builds of the same packages hold the same bytes; [`render`] before it becomes an image.
//!
//! Scrubbed from the tree (state of the build's run or day, which the guest makes again):
//!
//! - the SSH host keys (no image holds one: see sshd below) and the machine id (`/etc/machine-id`
//!   is left empty, so each machine gets its own at first boot);
//! - the .debs debootstrap left in apt's cache; logs, apt's lists (the archive's, signed daily:
//!   `apt update` fetches them), dpkg's and debconf's `-old` copies, the `/etc/*-` backups,
//!   ldconfig's aux-cache (a cache of file times) ([`GENERATED`]);
//! - every account's last password change day becomes the tree's SOURCE_DATE_EPOCH day.
//!
//! Configured in the image:
//!
//! - hostname, hosts, fstab: root `/dev/vda` ext4; the 9p tags `modshare` at `/lib/modules` and
//!   `datashare` at `/mnt/share`, both `nofail` (the initramfs may already have mounted modshare);
//! - networking: systemd-networkd, DHCP on any `en*`/`eth*` link, so the predictable name of the
//!   virtio NIC does not matter;
//! - sshd: keys only, `PermitRootLogin prohibit-password`; the tree holds no host key and an
//!   ed25519 key is made on each machine's first boot. Trade-off: a second or so of first
//!   boot under TCG, against every VM of an image sharing one host key;
//! - root stays locked: the per-lab password and SSH key are set at boot through the guest agent;
//! - serial getty on ttyS0, qemu-guest-agent enabled (it needs the `org.qemu.guest_agent.0`
//!   virtio-serial port, which the renderer adds);
//! - systemd's `.updated` stamps match `/usr`, so first boot skips ldconfig and hwdb rebuilds;
//! - units a lab boot does not need are masked ([`MASKED_UNITS`]): under TCG every unit costs
//!   seconds of one emulated CPU (masking these took userspace boot from 29 s to 22 s);
//! - the lean init [`LEAN_INIT`] (`lean-init.sh` beside this file, [`lean_init`]), which a lean
//!   boot runs as pid 1 instead of systemd (kernel command line `init=`, which the initramfs
//!   honours): it mounts proc, sysfs, devtmpfs, devpts, tmpfs on /dev/shm, /run and /tmp, debugfs
//!   and tracefs, remounts / read-write, links /dev/fd and /dev/std*, sets the hostname, brings
//!   `lo` up, mounts the 9p shares as fstab names them, starts loading the drivers of devices
//!   as they appear, as udev would (`udevadm monitor --kernel` reads the kernel's uevents without
//!   udevd; each MODALIAS is `modprobe`d: the CXL ports and memdevs probed asynchronously, a
//!   region's DAX device, a namespace, cxl_test's mock devices), `modprobe`s [`LEAN_MODULES`]
//!   (what udev loads for the CXL devices at coldplug, not the rest of coldplug), replays the
//!   modaliases already on the cxl, nd and dax buses (what the monitor missed while starting), finds the guest agent's port by its name in
//!   `/sys/class/virtio-ports/*/name` (no udev, no `/dev/virtio-ports/` link; none in 10 s powers
//!   off), runs `qemu-ga` on it with
//!   PATH set (so `guest-set-user-password` finds `chpasswd`). The shell stays pid 1 and waits:
//!   that reaps the orphans of the agent's commands, and an agent that exits is started again.
//!   No systemd, udev, network or sshd: `lab ssh` needs the full boot.
//!
//! Applying never writes into an existing file: it unlinks and creates. The tree is a hard-link
//! copy of the cached debootstrap tree, which must stay as it is.

use std::path::{Path, PathBuf};

use fs_err as fs;

use crate::qemu::AGENT_PORT_NAME;
use crate::stack::recipe::RootfsRecipe;

/// Where the lean init lives in the image; a lean boot's kernel command line says `init=` it.
pub const LEAN_INIT: &str = "/usr/lib/cxl-lab/lean-init";
/// What the lean init loads at boot (one `modprobe -a`): the hardware RNG (without it the kernel's
/// random pool takes seconds to fill under TCG and the guest agent waits for it), and the CXL
/// stack a full boot's udev loads at coldplug (ACPI root, ports, the PCI driver, memdevs, the
/// nvdimm bridge; cxl_core and cxl_port are built into Debian's kernel and modules of the source
/// kernel), and the DAX and pmem drivers a region's devices need (a region's DAX device, a pmem
/// namespace, kmem): with no udevd to wait for, a `/dev/daxN.M` opened right after
/// `cxl create-region` must already have its driver. Drivers of other devices that appear later
/// come by their uevents' MODALIAS.
pub const LEAN_MODULES: [&str; 11] =
    ["virtio_rng", "cxl_acpi", "cxl_port", "cxl_pci", "cxl_mem", "cxl_pmem", "nd_pmem", "dax_pmem", "dax_cxl", "device_dax", "kmem"];

const NINEP_OPTIONS: &str = "trans=virtio,version=9p2000.L,msize=262144,nofail";

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum ConfigItem {
    File { path: String, mode: u32, contents: String },
    Symlink { path: String, target: String },
    Dir { path: String },
    Remove { path: String },
    /// Every file in `dir` whose name ends in `suffix`.
    RemoveMatching { dir: String, suffix: String },
    /// Replaces root's password field in /etc/shadow with `!` (locked).
    LockRoot,
    /// Sets every account's last password change day in /etc/shadow to the SOURCE_DATE_EPOCH's.
    PasswordChangeDay,
    /// Writes systemd's `.updated` stamp in `dir` with the tree's `/usr` time, so first boot does
    /// not run the `ConditionNeedsUpdate=` services (ldconfig, hwdb, catalog): seconds under TCG.
    StampUpdated { dir: String },
}

/// Masked in the image; `systemctl unmask` brings any back. ifupdown's `networking.service`
/// would run DHCP a second time beside systemd-networkd; the monitors (`cxl monitor`, `ndctl
/// monitor`) are for suites to start when they want events; the rest is maintenance a
/// short-lived lab never needs.
pub const MASKED_UNITS: [&str; 13] = [
    "networking.service",
    "cxl-monitor.service",
    "ndctl-monitor.service",
    "cron.service",
    "e2scrub_reap.service",
    "systemd-pstore.service",
    "systemd-binfmt.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "fstrim.timer",
    "logrotate.timer",
];

/// Files the build writes that differ from one build to the next (dates, times, the archive's
/// signed lists), as (directory, name suffix): removed from the image.
pub const GENERATED: [(&str, &str); 7] = [
    ("/var/log", ".log"),
    ("/var/lib/apt/lists", "Release"),
    ("/var/lib/apt/lists", "Release.gpg"),
    ("/var/lib/apt/lists", "_Packages"),
    ("/var/lib/dpkg", "-old"),
    ("/var/cache/debconf", "-old"),
    // passwd-, group-, shadow-, gshadow-: shadow's backups.
    ("/etc", "-"),
];

fn file(path: &str, contents: &str) -> ConfigItem {
    ConfigItem::File { path: path.to_owned(), mode: 0o644, contents: contents.to_owned() }
}

fn enable(wants: &str, unit: &str, unit_path: &str) -> ConfigItem {
    ConfigItem::Symlink { path: format!("/etc/systemd/system/{wants}.wants/{unit}"), target: unit_path.to_owned() }
}

pub fn fstab() -> String {
    format!(
        "# cxl-lab: root is the VM's virtio disk; modules and data come over 9p\n\
         /dev/vda\t/\text4\trw,errors=remount-ro\t0\t1\n\
         modshare\t/lib/modules\t9p\t{NINEP_OPTIONS}\t0\t0\n\
         datashare\t/mnt/share\t9p\t{NINEP_OPTIONS}\t0\t0\n"
    )
}

fn mask(unit: &str) -> ConfigItem {
    ConfigItem::Symlink { path: format!("/etc/systemd/system/{unit}"), target: "/dev/null".to_owned() }
}

/// The lean init as the image holds it: `lean-init.sh` with the module list and the agent's port.
pub fn lean_init() -> String {
    include_str!("lean-init.sh").replace("@MODULES@", &LEAN_MODULES.join(" ")).replace("@AGENT_PORT@", AGENT_PORT_NAME)
}

/// What the debootstrapped tree loses before it is published (the module documentation).
pub fn scrub() -> Vec<ConfigItem> {
    let mut items = vec![
        file("/etc/machine-id", ""),
        ConfigItem::Remove { path: "/var/lib/dbus/machine-id".into() },
        ConfigItem::RemoveMatching { dir: "/etc/ssh".into(), suffix: "_key".into() },
        ConfigItem::RemoveMatching { dir: "/etc/ssh".into(), suffix: "_key.pub".into() },
        ConfigItem::RemoveMatching { dir: "/var/cache/apt/archives".into(), suffix: ".deb".into() },
        ConfigItem::Remove { path: "/var/cache/ldconfig/aux-cache".into() },
        ConfigItem::PasswordChangeDay,
    ];
    items.extend(GENERATED.iter().map(|(dir, suffix)| ConfigItem::RemoveMatching { dir: (*dir).into(), suffix: (*suffix).into() }));
    items
}

pub fn render(recipe: &RootfsRecipe) -> Vec<ConfigItem> {
    let hostname = &recipe.hostname;
    let systemd = "/usr/lib/systemd/system";
    let mut items = vec![
        file("/etc/hostname", &format!("{hostname}\n")),
        file("/etc/hosts", &format!("127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n")),
        file("/etc/fstab", &fstab()),
        ConfigItem::Dir { path: "/lib/modules".into() },
        ConfigItem::Dir { path: "/mnt/share".into() },
        file("/etc/systemd/network/20-cxl-lab-wired.network", "[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n"),
        enable("multi-user.target", "systemd-networkd.service", &format!("{systemd}/systemd-networkd.service")),
        enable("sockets.target", "systemd-networkd.socket", &format!("{systemd}/systemd-networkd.socket")),
        file(
            "/etc/ssh/sshd_config.d/cxl-lab.conf",
            "# cxl-lab: keys only; the lab's key is installed at boot through the guest agent\n\
             PermitRootLogin prohibit-password\nPasswordAuthentication no\nHostKey /etc/ssh/ssh_host_ed25519_key\n",
        ),
        file(
            "/etc/systemd/system/cxl-lab-ssh-hostkey.service",
            "[Unit]\nDescription=cxl-lab: make this machine's SSH host key\n\
             ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key\nBefore=ssh.service\n\n\
             [Service]\nType=oneshot\nExecStart=/usr/bin/ssh-keygen -q -t ed25519 -N \"\" -f /etc/ssh/ssh_host_ed25519_key\n\n\
             [Install]\nWantedBy=ssh.service\n",
        ),
        enable("ssh.service", "cxl-lab-ssh-hostkey.service", "/etc/systemd/system/cxl-lab-ssh-hostkey.service"),
        enable("getty.target", "serial-getty@ttyS0.service", &format!("{systemd}/serial-getty@.service")),
        enable("multi-user.target", "qemu-guest-agent.service", &format!("{systemd}/qemu-guest-agent.service")),
        ConfigItem::File { path: LEAN_INIT.into(), mode: 0o755, contents: lean_init() },
        ConfigItem::LockRoot,
        ConfigItem::StampUpdated { dir: "/etc".into() },
        ConfigItem::StampUpdated { dir: "/var".into() },
    ];
    items.extend(MASKED_UNITS.iter().map(|unit| mask(unit)));
    items
}

/// `/etc/shadow` with root's password field set to `!`.
pub fn lock_root(shadow: &str) -> String {
    edit_shadow(shadow, |fields| {
        if fields[0] == "root" {
            fields[1] = "!".to_owned();
        }
    })
}

/// `/etc/shadow` with every last change day that is set (the third field) set to `day`.
pub fn pin_change_days(shadow: &str, day: i64) -> String {
    edit_shadow(shadow, |fields| {
        if !fields[2].is_empty() {
            fields[2] = day.to_string();
        }
    })
}

/// `shadow` with `edit` applied to the fields of each line that has at least three.
fn edit_shadow(shadow: &str, edit: impl Fn(&mut Vec<String>)) -> String {
    shadow
        .lines()
        .map(|line| {
            let mut fields: Vec<String> = line.split(':').map(str::to_owned).collect();
            if fields.len() > 2 {
                edit(&mut fields);
            }
            fields.join(":") + "\n"
        })
        .collect()
}

fn inside(tree: &Path, path: &str) -> PathBuf {
    tree.join(path.trim_start_matches('/'))
}

/// Unlinks `path` if it exists (a hard link to the cached tree, a file, or a symlink).
fn unlink(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

fn write_new(path: &Path, mode: u32, contents: &[u8]) -> anyhow::Result<()> {
    use fs_err::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    unlink(path)?;
    let mut new_file = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path)?;
    std::io::Write::write_all(&mut new_file, contents)?;
    Ok(())
}

/// Applies `items` to the tree at `tree`, whose SOURCE_DATE_EPOCH is `epoch`.
pub fn apply(tree: &Path, items: &[ConfigItem], epoch: i64) -> anyhow::Result<()> {
    for item in items {
        match item {
            ConfigItem::File { path, mode, contents } => write_new(&inside(tree, path), *mode, contents.as_bytes())?,
            ConfigItem::Symlink { path, target } => {
                let link = inside(tree, path);
                fs::create_dir_all(link.parent().expect("a unit link has a parent"))?;
                unlink(&link)?;
                fs_err::os::unix::fs::symlink(target, &link)?;
            }
            ConfigItem::Dir { path } => {
                // `/lib` is a symlink into `/usr` on a merged-usr root: resolve it inside the tree.
                let resolved = resolve_in_tree(tree, path);
                fs::create_dir_all(resolved)?;
            }
            ConfigItem::Remove { path } => unlink(&inside(tree, path))?,
            ConfigItem::RemoveMatching { dir, suffix } => {
                let Ok(entries) = fs::read_dir(inside(tree, dir)) else { continue };
                for entry in entries {
                    let entry = entry?;
                    if entry.file_name().to_string_lossy().ends_with(suffix.as_str()) {
                        unlink(&entry.path())?;
                    }
                }
            }
            ConfigItem::StampUpdated { dir } => {
                let usr_modified = fs::metadata(tree.join("usr"))?.modified()?;
                let nanoseconds = usr_modified.duration_since(std::time::UNIX_EPOCH)?.as_nanos();
                let stamp = inside(tree, dir).join(".updated");
                write_new(&stamp, 0o644, format!("# Written by cxl-lab for systemd-update-done.\nTIMESTAMP_NSEC={nanoseconds}\n").as_bytes())?;
                // systemd compares the stamp's mtime too: make it /usr's exactly.
                std::fs::File::options().write(true).open(&stamp)?.set_modified(usr_modified)?;
            }
            ConfigItem::LockRoot => rewrite_shadow(tree, lock_root)?,
            ConfigItem::PasswordChangeDay => rewrite_shadow(tree, |shadow| pin_change_days(shadow, epoch / 86_400))?,
        }
    }
    Ok(())
}

fn rewrite_shadow(tree: &Path, edit: impl Fn(&str) -> String) -> anyhow::Result<()> {
    let shadow_path = inside(tree, "/etc/shadow");
    let shadow = fs::read_to_string(&shadow_path)?;
    write_new(&shadow_path, 0o640, edit(&shadow).as_bytes())
}

/// `path` inside `tree`, following the tree's own relative top-level symlinks (`lib -> usr/lib`).
fn resolve_in_tree(tree: &Path, path: &str) -> PathBuf {
    let relative = path.trim_start_matches('/');
    let (first, rest) = relative.split_once('/').unwrap_or((relative, ""));
    match std::fs::read_link(tree.join(first)) {
        Ok(target) if target.is_relative() => tree.join(target).join(rest),
        _ => tree.join(relative),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe() -> RootfsRecipe {
        RootfsRecipe {
            suite: "trixie".into(),
            mirror: None,
            hostname: "cxl-lab".into(),
            packages: vec![],
            headroom_mib: 2048,
        }
    }

    #[test]
    fn fstab_snapshot() {
        insta::assert_snapshot!(fstab(), @r"
        # cxl-lab: root is the VM's virtio disk; modules and data come over 9p
        /dev/vda	/	ext4	rw,errors=remount-ro	0	1
        modshare	/lib/modules	9p	trans=virtio,version=9p2000.L,msize=262144,nofail	0	0
        datashare	/mnt/share	9p	trans=virtio,version=9p2000.L,msize=262144,nofail	0	0
        ");
    }

    #[test]
    fn rendered_config_snapshot() {
        insta::assert_json_snapshot!(render(&recipe()));
    }

    #[test]
    fn scrub_snapshot() {
        insta::assert_json_snapshot!(scrub());
    }

    #[test]
    fn lean_init_snapshot() {
        insta::assert_snapshot!(lean_init());
    }

    #[test]
    fn lean_init_is_complete_and_executable() {
        let script = lean_init();
        assert!(!script.contains('@'), "a placeholder is left:\n{script}");
        for module in LEAN_MODULES {
            assert!(script.contains(&format!(" {module}")), "{module}");
        }
        let items = render(&recipe());
        let lean = items.iter().find(|item| matches!(item, ConfigItem::File { path, .. } if path == LEAN_INIT));
        assert!(matches!(lean, Some(ConfigItem::File { mode: 0o755, .. })), "{lean:?}");
        // dash parses it (the image's /bin/sh).
        let status = std::process::Command::new("sh").arg("-n").arg("-c").arg(&script).status().unwrap();
        assert!(status.success());
    }

    #[test]
    fn root_is_locked_and_nothing_else_changes() {
        let shadow = "root:$6$abc$def:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n";
        assert_eq!(lock_root(shadow), "root:!:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n");
        assert_eq!(pin_change_days(shadow, 20000), "root:$6$abc$def:20000:0:99999:7:::\ndaemon:*:20000:0:99999:7:::\n");
        assert_eq!(pin_change_days("nobody:*::0:99999:7:::\n", 20000), "nobody:*::0:99999:7:::\n");
    }

    #[test]
    fn apply_never_writes_through_hard_links() {
        let dir = tempfile::tempdir().unwrap();
        let cached = dir.path().join("cached");
        let tree = dir.path().join("tree");
        fs::create_dir_all(cached.join("etc/ssh")).unwrap();
        fs::create_dir_all(cached.join("var")).unwrap();
        fs::create_dir_all(cached.join("usr/lib")).unwrap();
        fs::write(cached.join("etc/fstab"), "original\n").unwrap();
        fs::write(cached.join("etc/shadow"), "root:*:1:0:99999:7:::\n").unwrap();
        fs::write(cached.join("etc/ssh/ssh_host_rsa_key"), "secret").unwrap();
        std::os::unix::fs::symlink("usr/lib", cached.join("lib")).unwrap();
        let status = std::process::Command::new("cp").arg("-al").arg(&cached).arg(&tree).status().unwrap();
        assert!(status.success());

        let mut items = scrub();
        items.extend(render(&recipe()));
        apply(&tree, &items, 2 * 86_400).unwrap();
        assert_eq!(fs::read_to_string(cached.join("etc/fstab")).unwrap(), "original\n");
        assert!(cached.join("etc/ssh/ssh_host_rsa_key").exists());
        assert_eq!(fs::read_to_string(tree.join("etc/fstab")).unwrap(), fstab());
        assert!(!tree.join("etc/ssh/ssh_host_rsa_key").exists());
        assert!(tree.join("usr/lib/modules").is_dir());
        assert_eq!(fs::read_to_string(tree.join("etc/shadow")).unwrap(), "root:!:2:0:99999:7:::\n");
        assert_eq!(fs::read_to_string(cached.join("etc/shadow")).unwrap(), "root:*:1:0:99999:7:::\n");
        let usr_modified = fs::metadata(tree.join("usr")).unwrap().modified().unwrap();
        assert_eq!(fs::metadata(tree.join("etc/.updated")).unwrap().modified().unwrap(), usr_modified);
        assert_eq!(
            fs::read_link(tree.join("etc/systemd/system/multi-user.target.wants/qemu-guest-agent.service")).unwrap(),
            Path::new("/usr/lib/systemd/system/qemu-guest-agent.service")
        );
    }
}
