//! The kernel built from source with the lab's config, on real source: Debian's `linux-source-7.3`
//! binary package (it carries `/usr/src/linux-source-7.3.tar.xz`), fetched by the Debian resolver
//! the source stack uses and unpacked once into a kept build tree (`<cache>/trees/linux-<key>`).
//! Heavy (a kernel build: minutes on two cores), so `#[ignore]`d; run in order with
//!
//! ```text
//! CXL_LAB_CACHE=/work/cache-linux nice -n 19 cargo test -p cxl-lab-core --test linux_source_build \
//!     -- --ignored --nocapture --test-threads 1
//! ```
//!
//! `cold_build` configures and builds (a tree kept from an earlier run is removed first, so the
//! build is cold), `rebuild_after_touching_drivers_cxl` touches one file and builds again in the
//! same tree, `boots_and_loads_the_test_modules` boots the result without a root (to the root
//! mount's panic) and with the lab's bare initramfs loading `cxl_test` and `nfit_test`. `LINUX_BUILD_BASE=defconfig`
//! builds the talk's plain recipe instead (defconfig and its fragment as written) for
//! docs/BENCHMARKS.md.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cxl_lab_core::layout::Layout;
use cxl_lab_core::shell::{report_skipped_test, Shell};
use cxl_lab_core::stack::build::{initramfs, kernel};
use cxl_lab_core::stack::build::linux::{self, ConfigBase, Fragment, KernelRelease};
use cxl_lab_core::stack::cache::{ArtifactKind, Cache, CacheKey};
use cxl_lab_core::stack::debian::{apt, DebianResolver};
use cxl_lab_core::stack::recipe::ArchiveRecipe;
use cxl_lab_core::stack::sources::{Candidate, DebianCandidate, Pin, Resolver};
use cxl_lab_core::sys::runner::CommandRunner;

/// CPU time (user + system) of the children this process has waited for: make and its compilers.
/// Wall time on this shared machine depends on what else runs; CPU time does not.
fn children_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name's closing parenthesis; cutime and cstime are fields 16 and 17.
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[13].parse::<u64>().unwrap() + fields[14].parse::<u64>().unwrap();
    // USER_HZ is 100 on Linux's x86 ABI.
    Duration::from_millis(ticks * 10)
}

fn minutes(duration: Duration) -> String {
    format!("{:.1} min", duration.as_secs_f64() / 60.0)
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Setup {
    layout: Layout,
    cache: Cache,
    runner: CommandRunner,
    shell: Shell,
    base: ConfigBase,
    fragment_text: String,
}

fn setup() -> Setup {
    let layout = Layout::for_workspace(workspace());
    let cache = Cache::new(&layout);
    let runner = CommandRunner::new(layout.build_logs_dir());
    let (base, fragment_path) = match std::env::var("LINUX_BUILD_BASE").as_deref() {
        Ok("defconfig") => (ConfigBase::Defconfig, workspace().join("lab/core/tests/data/talk-kernel.config")),
        _ => (ConfigBase::Allnoconfig, layout.templates_dir().join(linux::LAB_FRAGMENT)),
    };
    let fragment_text = std::fs::read_to_string(&fragment_path).unwrap();
    Setup { layout, cache, runner, shell: Shell::plain(), base, fragment_text }
}

/// The source tarball's package, fetched through the Debian resolver into the cache's downloads.
fn fetch_source(setup: &Setup) -> (Pin, PathBuf) {
    let archive = ArchiveRecipe::default();
    let mut resolver = DebianResolver::new(&setup.cache, &setup.runner, &archive).unwrap();
    let step = setup.shell.step("fetch linux-source-7.3");
    resolver.progress = Some(&step);
    let candidate = Candidate::Debian(DebianCandidate {
        package: "linux-source-7.3".to_owned(),
        suite: "trixie-backports".to_owned(),
        parts: Vec::new(),
        mirror: None,
    });
    let resolution = resolver.resolve(&candidate).unwrap_or_else(|error| panic!("{candidate}: {error}"));
    drop(resolver);
    step.done(&resolution.pin);
    let Pin::Debian { packages, .. } = &resolution.pin else { unreachable!() };
    let deb = setup.cache.layout.downloads_dir().join(packages[0].file_name());
    (resolution.pin, deb)
}

/// The kept build tree of this source and base.
fn tree_of(setup: &Setup, pin: &Pin) -> PathBuf {
    setup.layout.build_tree(&cxl_lab_core::stack::source::kernel_tree_name(pin, setup.base))
}

/// Unpacks the package's tarball into the tree unless it is there.
fn prepare_tree(setup: &Setup, pin: &Pin, deb: &Path) -> PathBuf {
    let tree = tree_of(setup, pin);
    if tree.join("Makefile").is_file() {
        return tree;
    }
    std::fs::create_dir_all(setup.layout.cache_tmp_dir()).unwrap();
    let unpacked = tempfile::tempdir_in(setup.layout.cache_tmp_dir()).unwrap();
    let step = setup.shell.step("unpack the kernel source");
    apt::extract(&setup.runner, deb, unpacked.path()).unwrap();
    let tarball = linux::source_tarball_in(unpacked.path()).unwrap();
    linux::unpack_tree(&tarball, &tree, &setup.runner).unwrap();
    step.done(tree.display());
    tree
}

/// Configures the tree and publishes a kernel artifact built in it, keyed by the source, the base,
/// the fragment and `state` (what changed in the tree since: a touched file).
fn configure_and_build(setup: &Setup, pin: &Pin, tree: &Path, state: &str) -> (PathBuf, KernelRelease, Duration, Duration) {
    let fragment = Fragment::parse(&setup.fragment_text);
    let cpu_before = children_cpu();
    let started = Instant::now();
    let report = linux::configure(tree, &fragment, setup.base, &setup.runner, &setup.shell).unwrap_or_else(|error| panic!("{error}"));
    let configured = started.elapsed();
    for note in report.notes() {
        setup.shell.status("Config", note);
    }
    let inputs = serde_json::json!({ "source": pin, "base": setup.base, "fragment": setup.fragment_text, "state": state });
    let key = CacheKey::of(ArtifactKind::Kernel, &inputs);
    let mut release = None;
    let started = Instant::now();
    let artifact = setup
        .cache
        .get_or_build(ArtifactKind::Kernel, &key, inputs, |staging| {
            release = Some(linux::build(staging, tree, &setup.runner, &setup.shell)?);
            Ok(())
        })
        .unwrap_or_else(|error| panic!("{error:#}"));
    let built = started.elapsed();
    let cpu = children_cpu() - cpu_before;
    std::fs::write(last_artifact_note(tree), artifact.as_os_str().as_encoded_bytes()).unwrap();
    let release = release.unwrap_or_else(|| KernelRelease(only_release(&artifact)));
    setup.shell.status(
        "Timing",
        format!("{}: configure {:.0} s, build and install {:.0} s ({}); CPU time of configure and build {}", setup.base, configured.as_secs_f64(), built.as_secs_f64(), minutes(built), minutes(cpu)),
    );
    (artifact, release, configured, built)
}

/// Where the tests note the artifact last built from a tree, for the boot test.
fn last_artifact_note(tree: &Path) -> PathBuf {
    tree.join(".cxl-lab-last-artifact")
}

fn only_release(artifact: &Path) -> String {
    linux::release_of(artifact).unwrap()
}

/// The test modules are in the tree, and depmod resolves the mockable builds first.
fn check_modules(setup: &Setup, artifact: &Path, release: &KernelRelease) {
    let modules = kernel::modules_release_dir(artifact, &release.0);
    // The test trees' own modules are in extra/test/, their builds of the in-tree ones in extra/.
    for relative in ["test/cxl_test", "test/cxl_mock", "test/cxl_mock_mem", "test/nfit_test", "cxl_core", "cxl_acpi", "libnvdimm", "nfit"] {
        let path = modules.join("extra").join(format!("{relative}.ko"));
        assert!(path.is_file(), "{} is missing", path.display());
    }
    let dep = std::fs::read_to_string(modules.join("modules.dep")).unwrap();
    assert!(dep.lines().any(|line| line.starts_with("extra/test/cxl_test.ko:")), "modules.dep has no cxl_test");
    assert!(!dep.lines().any(|line| line.starts_with("kernel/drivers/cxl/core/cxl_core.ko:")), "depmod kept the in-tree cxl_core");
    let shown = setup
        .runner
        .run_capture("modprobe-show-cxl_test", Command::new("modprobe").args(["-d"]).arg(artifact.join("modules")).args(["-S", &release.0, "--show-depends", "cxl_test"]))
        .unwrap();
    setup.shell.status("Modules", format!("modprobe cxl_test loads:\n{shown}"));
    assert!(shown.contains("extra/cxl_core.ko"), "cxl_test does not load the test tree's cxl_core:\n{shown}");
    let info = setup.runner.run_capture("modinfo-nfit_test", Command::new("modinfo").arg(modules.join("extra/test/nfit_test.ko"))).unwrap();
    assert!(info.contains(&format!("vermagic:       {} ", release.0)), "{info}");
}

#[test]
#[ignore = "downloads linux-source-7.3 and builds a kernel from it: minutes"]
fn cold_build() {
    let setup = setup();
    let (pin, deb) = fetch_source(&setup);
    let tree = tree_of(&setup, &pin);
    if tree.exists() {
        std::fs::remove_dir_all(&tree).unwrap();
    }
    let started = Instant::now();
    let tree = prepare_tree(&setup, &pin, &deb);
    let unpacked = started.elapsed();
    let state = format!("cold {}", cxl_lab_core::stack::cache::now_seconds());
    let (artifact, release, configured, built) = configure_and_build(&setup, &pin, &tree, &state);
    setup.shell.status(
        "Timing",
        format!(
            "cold {}: unpack {:.0} s + configure {:.0} s + build {:.0} s = {:.1} min; release {release}; artifact {}",
            setup.base,
            unpacked.as_secs_f64(),
            configured.as_secs_f64(),
            built.as_secs_f64(),
            (unpacked + configured + built).as_secs_f64() / 60.0,
            artifact.display()
        ),
    );
    check_modules(&setup, &artifact, &release);
}

#[test]
#[ignore = "needs the tree of cold_build"]
fn rebuild_after_touching_drivers_cxl() {
    let setup = setup();
    let (pin, deb) = fetch_source(&setup);
    let tree = prepare_tree(&setup, &pin, &deb);
    let touched = tree.join("drivers/cxl/core/region.c");
    let status = Command::new("touch").arg(&touched).status().unwrap();
    assert!(status.success());
    let state = format!("touched {} {}", touched.display(), cxl_lab_core::stack::cache::now_seconds());
    let (artifact, release, configured, built) = configure_and_build(&setup, &pin, &tree, &state);
    setup.shell.status(
        "Timing",
        format!("rebuild after touching drivers/cxl/core/region.c: configure {:.0} s + build {:.0} s", configured.as_secs_f64(), built.as_secs_f64()),
    );
    check_modules(&setup, &artifact, &release);
}

/// Boots `artifact`'s kernel under TCG on q35 and returns its serial output.
fn boot(qemu: &Path, artifact: &Path, initrd: Option<&Path>, append: &str) -> (String, Duration) {
    let started = Instant::now();
    let mut command = Command::new("timeout");
    command.arg("600").arg(qemu).arg("-kernel").arg(kernel::vmlinuz_path(artifact));
    if let Some(initrd) = initrd {
        command.arg("-initrd").arg(initrd);
    }
    let output = command
        .args(["-append", append, "-nographic", "-no-reboot", "-m", "2G", "-machine", "q35", "-accel", "tcg", "-nic", "none"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (String::from_utf8_lossy(&output.stdout).into_owned(), started.elapsed())
}

/// The lines of a console transcript that say how a boot went.
fn telling_lines(console: &str) -> String {
    let needles = ["Linux version", "VFS", "Kernel panic", "cxl", "nfit", "cxl-lab"];
    console.lines().filter(|line| needles.iter().any(|needle| line.contains(needle))).take(60).collect::<Vec<_>>().join("\n")
}

#[test]
#[ignore = "needs the artifact of cold_build and QEMU"]
fn boots_and_loads_the_test_modules() {
    let setup = setup();
    let Some(qemu) = cxl_lab_core::stack::host::find_program("qemu-system-x86_64") else {
        report_skipped_test("boots_and_loads_the_test_modules", "no qemu-system-x86_64");
        return;
    };
    let (pin, _) = fetch_source(&setup);
    let artifact = PathBuf::from(std::fs::read_to_string(last_artifact_note(&tree_of(&setup, &pin))).expect("run cold_build first"));
    let release = only_release(&artifact);

    // No root and no initramfs: the kernel gets as far as mounting the root.
    let (console, took) = boot(&qemu, &artifact, None, "console=ttyS0 panic=-1");
    setup.shell.status("Boot", format!("no root: {:.1} s\n{}", took.as_secs_f64(), telling_lines(&console)));
    assert!(console.contains("VFS: Unable to mount root"), "no root-mount panic:\n{console}");

    // The lab's initramfs builder, asked for the test modules: /init insmods their closure
    // (the test trees' cxl_core, libnvdimm, ... from extra/) and says whether all loaded.
    let archive = ArchiveRecipe::default();
    let mut resolver = DebianResolver::new(&setup.cache, &setup.runner, &archive).unwrap();
    let busybox = Candidate::Debian(DebianCandidate { package: "busybox-static".to_owned(), suite: "trixie".to_owned(), parts: Vec::new(), mirror: None });
    let resolution = resolver.resolve(&busybox).unwrap_or_else(|error| panic!("{busybox}: {error}"));
    let Pin::Debian { packages, .. } = &resolution.pin else { unreachable!() };
    let busybox_deb = setup.layout.downloads_dir().join(packages[0].file_name());
    let staging = tempfile::tempdir_in(setup.layout.cache_tmp_dir()).unwrap();
    let wanted: Vec<String> = ["cxl_test", "cxl_acpi", "cxl_port", "cxl_mem", "cxl_pmem", "nfit_test"].map(str::to_owned).to_vec();
    let initrd = initramfs::build(staging.path(), &busybox_deb, &kernel::modules_release_dir(&artifact, &release), &release, &wanted, &setup.runner)
        .unwrap_or_else(|error| panic!("{error:#}"));
    let (console, took) = boot(&qemu, &artifact, Some(&initrd), "console=ttyS0 panic=-1 cxllab.bare=1");
    setup.shell.status("Boot", format!("bare initramfs with cxl_test and nfit_test: {:.1} s\n{}", took.as_secs_f64(), telling_lines(&console)));
    assert!(console.contains(initramfs::BARE_READY_MARKER), "not every test module loaded:\n{console}");
}
