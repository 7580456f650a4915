//! `lab run`: boot the profile (or reuse the lab that is up on it), run each suite on each host,
//! keep the evidence of every failure, write the reports, and take down what was booted.
//!
//! Guest steps go through the lab's guest agent and host steps through its QMP socket, by the
//! same calls as `lab exec` and `lab qmp` ([`crate::lab::control`]). A suite fails when a step
//! failed or when the kernel logged a WARN, BUG or oops while it ran.

use std::cell::{Cell, OnceCell};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::lab::control;
use crate::lab::state::{LabState, MachineState};
use crate::lab::up::{self, UpOptions};
use crate::lab::LabContext;
use crate::model::decode::Region;
use crate::model::expect::{expected_view, ExpectedHost, ExpectedView, RegionPlan};
use crate::model::topology::{Host, Topology};
use crate::profile::Profile;
use crate::stack::{BootStack, StackKind};
use crate::sys::process::{pending_stop_signal, stop_signals};
use crate::sys::runner::CommandRunner;
use crate::suite::format::{self, Action, Check, GuestCommand, Requirement, Suite};
use crate::capability::ServiceConfig;
use crate::suite::capability::{self, CapabilityGuest};
use crate::suite::decode;
use crate::suite::guest_tool;
use crate::suite::kernel;
use crate::suite::ndctl;
use crate::suite::region::{self, Planned};
use crate::suite::outcome::{Outcome, RunResult, StepResult, SuiteResult};
use crate::suite::report::{self, ReportFiles};
use crate::suite::topology;

/// How long ndctl's CXL suite may run (about 5 minutes under TCG on two cores).
const NDCTL_SUITE_TIMEOUT: Duration = Duration::from_secs(2400);
const NO_DCD_DEVICE: &str = "the profile gives this host no device with dynamic capacity";
/// How much of a step's output the results keep.
const OUTPUT_LIMIT: usize = 64 * 1024;
/// Waits for the end of boot (`degraded` counts: its exit code is ignored), then for udev's queue,
/// on a guest booted with systemd (a full boot). A lean boot has neither systemd nor udev (its
/// init loads the CXL drivers before the guest agent starts): asking costs 0.3–0.5 s under TCG.
const SETTLE_SCRIPT: &str = "if [ -d /run/systemd/system ]; then systemctl is-system-running --wait >/dev/null 2>&1; udevadm settle --timeout=120; fi";
const SETTLE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the runner's own guest commands (dmesg, cxl list, the kernel config) may take.
const HELPER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the guest may take to tag every granule of a region (under TCG, every store to CXL
/// memory is emulated).
const TAG_TIMEOUT: Duration = Duration::from_secs(900);

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub profile: String,
    pub stack: StackKind,
    pub suites: Vec<String>,
    /// Where the reports and the evidence go.
    pub out: PathBuf,
    /// How the lab boots when none is up on the profile.
    pub boot: UpOptions,
    /// The expected view to check the guest against (`profile expect`'s JSON, perhaps edited)
    /// instead of the profile's own.
    pub expect: Option<PathBuf>,
    /// Fault injection for testing the `decode` check: after the guest tagged a region, move
    /// this granule's tag to another device's backing file before the host checks.
    pub move_tag: Option<u64>,
}

pub struct RunReport {
    pub result: RunResult,
    pub files: ReportFiles,
    /// How long booting took (zero when a lab was reused), and the suites after it.
    pub boot_time: Duration,
    pub suites_time: Duration,
}

/// Runs the suites; the reports are written whatever the steps found. An error is the run's own
/// (a suite file, the profile, a boot that failed), not a step's.
pub fn run(context: &LabContext, options: &RunOptions) -> anyhow::Result<RunReport> {
    let suites: Vec<Suite> = options.suites.iter().map(|name| format::load(&context.paths, name)).collect::<anyhow::Result<_>>()?;
    let profile = crate::profile::load(&context.paths, &options.profile)?;
    let view = match &options.expect {
        Some(path) => {
            let view: ExpectedView = serde_json::from_str(&fs_err::read_to_string(path)?).with_context(|| format!("reading the expected view {}", path.display()))?;
            check_view_fits(&view, &profile.topology).with_context(|| format!("the expected view {}", path.display()))?;
            view
        }
        None => expected_view(&profile.topology),
    };
    let names: Vec<&str> = suites.iter().map(|suite| suite.name.as_str()).collect();
    let hosts: Vec<&str> = profile.topology.hosts.iter().map(|host| host.name.as_str()).collect();
    report::clear_evidence(&options.out, &names, &hosts)?;
    let boot_started = Instant::now();
    let (mut state, booted, restore_each) = match reuse(context, options, &profile)? {
        Some(state) => (state, false, false),
        None => match boot(context, options) {
            Ok((state, snapshot_ready)) => (state, true, snapshot_ready),
            Err(error) => return boot_failed(context, options, &profile, &suites, &error, boot_started.elapsed()),
        },
    };
    let boot_time = boot_started.elapsed();
    // Ctrl-C from here on stops the run between steps, and the lab it booted is still taken down
    // and the results so far written (`lab up` holds these signals already once it launched).
    stop_signals().thread_block().context("blocking stop signals while the suites run")?;
    let suites_started = Instant::now();
    let results = if restore_each {
        run_each_from_snapshot(context, &mut state, &view, &profile.topology, &suites, options)
    } else {
        run_suites(context, &state, &view, &profile.topology, &suites, options)
    };
    let suites_time = suites_started.elapsed();
    let lost = lost_machines(&state);
    // The reports first: a lab that will not come down must not cost the results.
    let reported = results.map_err(|error| if lost.is_empty() { error } else { error.context(lost.join("; ")) }).and_then(|suites| {
        let result = RunResult {
            profile: state.plan.profile.clone(),
            stack: state.plan.boot_stack.stack.to_string(),
            kernel_release: state.plan.boot_stack.kernel_release.clone(),
            booted,
            suites,
            lost: lost.clone(),
        };
        let files = report::write(&options.out, &result)?;
        Ok(RunReport { result, files, boot_time, suites_time })
    });
    if booted {
        // What is left of a lab that lost a machine goes too; its logs stay in its run directory.
        if let Err(error) = control::down(context) {
            context.shell.warn(format!("the lab this run booted did not come down: {error:#}"));
        }
    }
    reported
}

/// An expected view given with `--expect` must be of this profile and name each of its hosts, so
/// that a wrong file is refused before anything boots.
fn check_view_fits(view: &ExpectedView, topology: &Topology) -> anyhow::Result<()> {
    if view.profile != topology.name {
        bail!("it is of profile `{}`, not `{}`", view.profile, topology.name);
    }
    let mut listed: Vec<&str> = view.hosts.iter().map(|host| host.host.as_str()).collect();
    let mut hosts: Vec<&str> = topology.hosts.iter().map(|host| host.name.as_str()).collect();
    listed.sort_unstable();
    hosts.sort_unstable();
    if listed != hosts {
        bail!("it lists hosts {listed:?}, the profile has {hosts:?}");
    }
    Ok(())
}

/// The lab that is up on this profile and stack, if one is; one up on anything else is refused.
fn reuse(context: &LabContext, options: &RunOptions, profile: &Profile) -> anyhow::Result<Option<LabState>> {
    let Some(state) = context.files.read_live_state()? else { return Ok(None) };
    let plan = &state.plan;
    if same_file(&plan.profile_path, &profile.path) && plan.boot_stack.stack == options.stack {
        if let Some(boot) = options.boot.boot.filter(|boot| *boot != plan.boot) {
            bail!(
                "lab `{}` runs profile `{}` with a {} boot, not the {boot} boot asked for: `cargo xtask lab --lab {} down` first, or run on another lab (`--lab NAME`)",
                plan.lab, plan.profile, plan.boot, plan.lab
            );
        }
        context.shell.status("Reusing", format!("lab `{}` (profile `{}`, {} stack)", plan.lab, plan.profile, plan.boot_stack.stack));
        return Ok(Some(state));
    }
    bail!(
        "lab `{}` runs profile `{}` on the {} stack, not `{}` on the {} stack: `cargo xtask lab --lab {} down` first, or run on another lab (`--lab NAME`)",
        plan.lab, plan.profile, plan.boot_stack.stack, options.profile, options.stack, plan.lab
    );
}

/// Boots the lab (from its snapshot, if asked and there is one); true when every machine now has
/// a snapshot to start the next suite from.
fn boot(context: &LabContext, options: &RunOptions) -> anyhow::Result<(LabState, bool)> {
    let boot = UpOptions { profile: options.profile.clone(), stack: options.stack, detach: true, ..options.boot.clone() };
    let report = up::up(context, &boot)?;
    Ok((report.state, report.snapshot_ready))
}

/// Boot once, test many: each suite after the first starts on machines restored from the
/// snapshot the boot saved (or started from), so no suite sees what an earlier one left.
fn run_each_from_snapshot(context: &LabContext, state: &mut LabState, view: &ExpectedView, topology: &Topology, suites: &[Suite], options: &RunOptions) -> anyhow::Result<Vec<SuiteResult>> {
    let mut results = Vec::new();
    for (index, suite) in suites.iter().enumerate() {
        if index > 0 && pending_stop_signal().is_none() {
            control::down(context).context("taking the lab down before restoring it for the next suite")?;
            *state = boot(context, options).with_context(|| format!("restoring the lab for suite `{}`", suite.name))?.0;
        }
        results.extend(run_suites(context, state, view, topology, std::slice::from_ref(suite), options)?);
    }
    Ok(results)
}

/// The lab did not come up (QEMU did not start, the guest agent never answered): every suite on
/// every host is an error with the boot's evidence, and the reports are written all the same.
fn boot_failed(context: &LabContext, options: &RunOptions, profile: &Profile, suites: &[Suite], error: &anyhow::Error, took: Duration) -> anyhow::Result<RunReport> {
    let reason = format!("the lab did not boot: {error:#}");
    context.shell.warn(&reason);
    let mut results = Vec::new();
    for host in &profile.topology.hosts {
        for suite in suites {
            let evidence = boot_evidence(context, &host.name, &reason, &report::evidence_dir(&options.out, &suite.name, &host.name));
            let step = StepResult { name: "the lab boots".to_owned(), outcome: Outcome::Error(reason.clone()), duration: took, output: String::new() };
            results.push(SuiteResult { suite: suite.name.clone(), host: host.name.clone(), steps: vec![step], duration: took, evidence });
        }
    }
    let result = RunResult { profile: profile.topology.name.clone(), stack: options.stack.to_string(), kernel_release: String::new(), booted: false, lost: Vec::new(), suites: results };
    let files = report::write(&options.out, &result)?;
    Ok(RunReport { result, files, boot_time: took, suites_time: Duration::ZERO })
}

/// What a failed boot left in the host's run directory (the serial log, QEMU's argv and its own
/// output, stderr included), the supervisor's log and the error, copied into `dir`.
fn boot_evidence(context: &LabContext, host: &str, reason: &str, dir: &Path) -> Vec<PathBuf> {
    let run_dir = context.files.run_dir(host);
    let copies = [
        ("serial.log", run_dir.serial_log()),
        ("qemu-argv.txt", run_dir.argv_file()),
        ("qemu.log", run_dir.qemu_log()),
        ("supervisor.log", context.files.supervisor_log()),
    ];
    let mut kept = Vec::new();
    if let Err(error) = fs_err::create_dir_all(dir) {
        context.shell.warn(format!("keeping the evidence in {}: {error}", dir.display()));
        return kept;
    }
    let mut missing = Vec::new();
    for (name, source) in copies {
        match fs_err::copy(&source, dir.join(name)) {
            Ok(_) => kept.push(dir.join(name)),
            Err(error) => missing.push(format!("{name}: {error}")),
        }
    }
    if fs_err::write(dir.join("error.txt"), format!("{reason}\n")).is_ok() {
        kept.push(dir.join("error.txt"));
    }
    if !missing.is_empty() && fs_err::write(dir.join("missing.txt"), missing.join("\n") + "\n").is_ok() {
        kept.push(dir.join("missing.txt"));
    }
    kept
}

/// The machines whose QEMU is gone, each with where its serial console's log is.
fn lost_machines(state: &LabState) -> Vec<String> {
    let gone = state.machines.iter().filter(|machine| !machine.qemu_runs());
    gone.map(|machine| format!("QEMU of `{}` (pid {}) ended during the run; its serial log: {}", machine.host, machine.qemu_pid, machine.serial_log.display())).collect()
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

fn run_suites(context: &LabContext, state: &LabState, view: &ExpectedView, topology: &Topology, suites: &[Suite], options: &RunOptions) -> anyhow::Result<Vec<SuiteResult>> {
    let mut results = Vec::new();
    for machine in &state.machines {
        let guest = Guest::new(context, state, machine, view, topology, options)?;
        if pending_stop_signal().is_none() {
            guest.settle()?;
        }
        for suite in suites {
            results.push(guest.run_suite(suite, state, &options.out));
        }
    }
    Ok(results)
}

/// One machine of the lab, as the suites see it.
struct Guest<'a> {
    context: &'a LabContext,
    /// The whole lab: a check that drives several hosts (`capability`) finds the others here.
    state: &'a LabState,
    view: &'a ExpectedView,
    topology: &'a Topology,
    options: &'a RunOptions,
    machine: &'a MachineState,
    stack: &'a BootStack,
    expected: &'a ExpectedHost,
    /// The profile's host: its devices and windows, for the decode model.
    host: &'a Host,
    /// `RunOptions::move_tag`.
    move_tag: Option<u64>,
    /// Why a region cannot be committed here (`None`: it can), asked of the guest once.
    region_commit: OnceCell<Option<String>>,
    /// Why the guest kernel cannot take dynamic capacity (`None`: it can), asked once.
    dynamic_capacity_kernel: OnceCell<Option<String>>,
    /// Whether the lab's guest program is in the guest, installed at most once.
    guest_tool: OnceCell<Result<(), String>>,
    /// How many lines of the kernel log earlier suites (or the boot) own.
    log_seen: Cell<usize>,
}

impl<'a> Guest<'a> {
    fn new(context: &'a LabContext, state: &'a LabState, machine: &'a MachineState, view: &'a ExpectedView, topology: &'a Topology, options: &'a RunOptions) -> anyhow::Result<Guest<'a>> {
        let Some(expected) = view.hosts.iter().find(|host| host.host == machine.host) else {
            bail!("the lab's machine `{}` is no host of the expected view of `{}`", machine.host, view.profile);
        };
        let Some(host) = topology.hosts.iter().find(|host| host.name == machine.host) else {
            bail!("the lab's machine `{}` is no host of profile `{}`", machine.host, topology.name);
        };
        Ok(Guest {
            context,
            state,
            view,
            topology,
            options,
            machine,
            stack: &state.plan.boot_stack,
            expected,
            host,
            move_tag: options.move_tag,
            region_commit: OnceCell::new(),
            dynamic_capacity_kernel: OnceCell::new(),
            guest_tool: OnceCell::new(),
            log_seen: Cell::new(0),
        })
    }

    fn run_suite(&self, suite: &Suite, state: &LabState, out: &Path) -> SuiteResult {
        let started = Instant::now();
        let log_seen = self.log_seen.get();
        let unmet = self.unmet(&suite.requires);
        let mut steps = Vec::new();
        for step in &suite.steps {
            if let Some(signal) = pending_stop_signal() {
                let result = timed(&step.name, || (Outcome::Error(format!("not run: the run was interrupted ({signal})")), String::new()));
                self.show(&suite.name, &result);
                steps.push(result);
                continue;
            }
            let results = match unmet.clone().or_else(|| self.unmet(&step.requires)) {
                Some(reason) => vec![timed(&step.name, || (Outcome::Skipped(reason), String::new()))],
                None if step.action == Action::Check(Check::Regions) => self.per_window(&step.name, Self::region_in),
                None if step.action == Action::Check(Check::Decode) => self.per_window(&step.name, Self::decode_in),
                None if step.action == Action::Check(Check::NdctlCxl) => self.ndctl_cxl(&step.name),
                None if step.action == Action::Check(Check::Capability) => self.capability(&step.name),
                None => vec![timed(&step.name, || self.act(&step.action, &suite.kernel_log_allows))],
            };
            for result in results {
                self.show(&suite.name, &result);
                steps.push(result);
            }
        }
        if pending_stop_signal().is_none() {
            let kernel_step = timed("no kernel WARN, BUG or oops while the suite ran", || self.kernel_log_since(log_seen, &suite.kernel_log_allows));
            self.show(&suite.name, &kernel_step);
            steps.push(kernel_step);
        }
        let mut result = SuiteResult { suite: suite.name.clone(), host: self.machine.host.clone(), steps, duration: started.elapsed(), evidence: Vec::new() };
        if !result.passed() && pending_stop_signal().is_none() {
            result.evidence = self.keep_evidence(state, &report::evidence_dir(out, &suite.name, &self.machine.host));
        }
        result
    }

    /// Waits until the guest finished booting and udev loaded the drivers of what it found: the
    /// guest agent answers before that (right after boot, `cxl_acpi` may not be loaded yet).
    /// Then counts the kernel log's lines: the first suite owns what comes after them.
    fn settle(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        let settled = self.exec(&format!("{SETTLE_SCRIPT}; {}", kernel::LOG_LINES_SCRIPT), SETTLE_TIMEOUT)?;
        self.log_seen.set(String::from_utf8_lossy(&settled.stdout).trim().parse().unwrap_or(0));
        self.context.shell.verbose(format!("{}: settled in {:.2} s", self.machine.host, started.elapsed().as_secs_f64()));
        Ok(())
    }

    fn show(&self, suite: &str, step: &StepResult) {
        let (verb, reason) = match &step.outcome {
            Outcome::Passed => ("Passed", String::new()),
            Outcome::Failed(reason) => ("Failed", format!(": {reason}")),
            Outcome::Skipped(reason) => ("Skipped", format!(": {reason}")),
            Outcome::Error(reason) => ("Error", format!(": {reason}")),
        };
        let took = step.duration.as_secs_f64();
        self.context.shell.status(verb, format!("{suite}/{}: {} ({took:.2} s){reason}", self.machine.host, step.name));
    }

    /// Why a requirement is not met here, for the first one that is not.
    fn unmet(&self, requires: &[Requirement]) -> Option<String> {
        requires.iter().find_map(|requirement| match requirement {
            Requirement::RegionCommit => self.region_commit.get_or_init(|| self.ask_region_commit()).clone(),
            Requirement::Pmem => self.pmem_device().is_none().then(|| "the profile gives this host no device with persistent capacity".to_owned()),
            Requirement::DynamicCapacity => self.dcd_device().is_none().then(|| NO_DCD_DEVICE.to_owned()),
            Requirement::DynamicCapacityKernel => self.dynamic_capacity_kernel.get_or_init(|| self.ask_dynamic_capacity_kernel()).clone(),
            Requirement::CapabilityDevice => self.capability_service().is_none().then(|| self.no_capability_device()),
        })
    }

    /// The capability service of a backend this host's devices use, when the lab runs one.
    fn capability_service(&self) -> Option<&'a ServiceConfig> {
        self.state.plan.capabilities.iter().find(|service| service.requesters.iter().any(|known| known.host == self.machine.host))
    }

    fn no_capability_device(&self) -> String {
        let uses_one = self.topology.capability_backends().any(|backend| self.topology.capability_requesters(&backend.id).iter().any(|known| known.host == self.machine.host));
        match crate::lab::plan::unchecked_capabilities_note(self.topology, &self.state.plan.boot_stack) {
            Some(note) if uses_one => note,
            _ => format!("the profile marks no memory backend of host `{}` `capabilities: true`", self.machine.host),
        }
    }

    /// Presents a token of the whole backend when this host's devices are capability-checked
    /// (else its writes would be dropped and its reads all-ones); nothing otherwise.
    fn grant_capabilities(&self, transcript: &mut String) -> Result<(), String> {
        match self.capability_service() {
            Some(service) => capability::grant_whole_backend(self, service, &self.context.files.data_dir(), transcript),
            None => Ok(()),
        }
    }

    /// The `capability` check, driven from the backend's first host with the next host that
    /// shares it; on the other hosts one skip saying where it ran.
    fn capability(&self, name: &str) -> Vec<StepResult> {
        let Some(service) = self.capability_service() else {
            return vec![timed(name, || (Outcome::Skipped(self.no_capability_device()), String::new()))];
        };
        let owner = &service.requesters[0].host;
        if *owner != self.machine.host {
            return vec![timed(name, || (Outcome::Skipped(format!("run from {owner}, the first host of `{}`: the check drives both hosts", service.backend)), String::new()))];
        }
        let peer = service.requesters.iter().find(|known| known.host != *owner).and_then(|known| self.state.machines.iter().find(|machine| machine.host == known.host));
        let Some(peer) = peer else {
            return vec![timed(name, || (Outcome::Skipped(format!("`{}` is used by one host only: the check needs two", service.backend)), String::new()))];
        };
        match Guest::new(self.context, self.state, peer, self.view, self.topology, self.options) {
            Ok(peer) => capability::check(name, self, &peer, service, &self.context.files.data_dir()),
            Err(error) => vec![timed(name, || (Outcome::Error(format!("{error:#}")), String::new()))],
        }
    }

    /// From the guest's sysfs: no kernel configuration option tells.
    fn ask_dynamic_capacity_kernel(&self) -> Option<String> {
        let Some(serial) = self.dcd_device().map(|memdev| memdev.serial) else { return Some(NO_DCD_DEVICE.to_owned()) };
        match self.shell_output(&kernel::dynamic_capacity_script(serial)) {
            Ok(output) => kernel::dynamic_capacity_unsupported(&output, serial),
            Err(error) => Some(format!("cannot read the guest's sysfs: {error:#}")),
        }
    }

    fn dcd_device(&self) -> Option<&crate::model::expect::ExpectedMemdev> {
        self.expected.memdevs.iter().find(|memdev| memdev.dynamic_capacity_regions > 0)
    }

    /// From the kernel's configuration the lab's stack keeps beside it, else the guest's.
    fn ask_region_commit(&self) -> Option<String> {
        if let Some(config) = kernel::stack_config(&self.stack.kernel, &self.stack.modules_dir, &self.stack.kernel_release) {
            return kernel::region_commit_unsupported(&config);
        }
        match self.shell_output(kernel::REGION_CONFIG_SCRIPT) {
            Ok(output) => kernel::region_commit_unsupported(&output),
            Err(error) => Some(format!("cannot read the guest kernel's configuration: {error:#}")),
        }
    }

    fn pmem_device(&self) -> Option<&crate::model::expect::ExpectedMemdev> {
        self.expected.memdevs.iter().find(|memdev| memdev.pmem_size > 0)
    }

    /// Each of [`format::PLACEHOLDERS`] in a step's text, from the model.
    fn fill(&self, text: &str) -> Result<String, String> {
        let pmem = self.pmem_device();
        let dcd = self.dcd_device();
        let value = |placeholder: &str| match placeholder {
            "@pmem_id@" => pmem.map(|memdev| memdev.qemu_id.clone()),
            "@pmem_serial@" => pmem.map(|memdev| memdev.serial.to_string()),
            "@dcd_id@" => dcd.map(|memdev| memdev.qemu_id.clone()),
            "@dcd_serial@" => dcd.map(|memdev| memdev.serial.to_string()),
            "@dcd_region_size@" => dcd.map(|memdev| (memdev.dynamic_capacity_size / memdev.dynamic_capacity_regions).to_string()),
            "@host@" => Some(self.machine.host.clone()),
            _ => None,
        };
        let mut filled = text.to_owned();
        for placeholder in format::PLACEHOLDERS {
            if filled.contains(placeholder) {
                let value = value(placeholder).ok_or_else(|| format!("{placeholder}: the profile has no such device on this host"))?;
                filled = filled.replace(placeholder, &value);
            }
        }
        Ok(filled)
    }

    fn act(&self, action: &Action, kernel_log_allows: &[String]) -> (Outcome, String) {
        match action {
            Action::Guest(command) => self.guest_step(command),
            Action::Qmp { command, arguments } => self.qmp_step(command, arguments.as_ref()),
            Action::Check(Check::Topology) => self.topology_step(),
            Action::Check(Check::KernelLog) => self.kernel_log_since(0, kernel_log_allows),
            Action::Check(Check::Regions | Check::Decode) => unreachable!("the regions and decode checks give one result per window"),
            Action::Check(Check::NdctlCxl | Check::Capability) => unreachable!("the ndctl-cxl and capability checks give one result per test or claim"),
        }
    }

    /// A per-window check (regions, decode): one result per window, a window the model gives no
    /// region skipping with the model's reason.
    fn per_window(&self, name: &str, check: fn(&Self, &Planned, &mut String) -> Result<(), String>) -> Vec<StepResult> {
        let windows = self.expected.root_decoders.iter().map(|decoder| {
            timed(&format!("{name}: decoder0.{}", decoder.index), || match &decoder.region {
                RegionPlan::None { reason } => (Outcome::Skipped(reason.clone()), String::new()),
                RegionPlan::Region { mode, memdevs, ways, granularity, size } => {
                    let plan = Planned { decoder: decoder.index, mode, serials: memdevs, ways: *ways, granularity: *granularity, size: *size };
                    let mut transcript = String::new();
                    let outcome = check(self, &plan, &mut transcript).map_or_else(Outcome::Failed, |()| Outcome::Passed);
                    (outcome, clip(transcript))
                }
            })
        });
        windows.collect()
    }

    /// ndctl's CXL suite in the guest: one result per test of meson's log, or one skip with what
    /// the guest lacks (the source stack's ndctl tests and `cxl_test`, udev).
    fn ndctl_cxl(&self, name: &str) -> Vec<StepResult> {
        let unmet = match self.shell_output(ndctl::NEEDS_SCRIPT) {
            Ok(output) => ndctl::unmet(&output),
            Err(error) => Some(format!("cannot ask the guest what it has: {error:#}")),
        };
        if let Some(reason) = unmet {
            return vec![timed(name, || (Outcome::Skipped(reason), String::new()))];
        }
        let started = Instant::now();
        let log = self.exec(ndctl::RUN_SCRIPT, NDCTL_SUITE_TIMEOUT).map_err(|error| format!("{error:#}")).and_then(|output| {
            ndctl::parse_testlog(&String::from_utf8_lossy(&output.stdout))
        });
        match log {
            Ok(tests) => tests
                .into_iter()
                .map(|test| StepResult {
                    name: format!("{name}: {}", test.name),
                    outcome: test.outcome,
                    duration: Duration::from_secs_f64(test.seconds),
                    output: clip(test.output),
                })
                .collect(),
            Err(error) => vec![StepResult { name: name.to_owned(), outcome: Outcome::Failed(error), duration: started.elapsed(), output: String::new() }],
        }
    }

    /// Creates the planned region, checks it, puts a pattern through a DAX device on it, and
    /// takes the region away again.
    fn region_in(&self, plan: &Planned, transcript: &mut String) -> Result<(), String> {
        let names = region::memdev_names(&self.guest_json("cxl list -M", transcript)?);
        let created = self.guest_json(&region::create_command(plan, &names)?, transcript)?;
        let name = self.checked_or_removed(plan, &created, transcript)?;
        let dax = self.logged(&region::dax_script(plan.mode, &name), transcript).map(|output| output.trim().to_owned());
        let used = dax.clone().and_then(|dax| self.grant_capabilities(transcript).and_then(|()| self.dax_pattern(plan, &dax, transcript)));
        let removed = self.logged(&region::teardown_script(plan.mode, &name, dax.as_deref().ok()), transcript);
        used.and(removed.map(drop))
    }

    /// Creates the planned region at the window's own granularity (below a one-way window the
    /// plan's 256 would make 16 times the granules of a 4k window for the same check), has the
    /// guest write a tag at the start of every granule, checks each in the backing files where
    /// the model puts it, and takes the region away again.
    fn decode_in(&self, plan: &Planned, transcript: &mut String) -> Result<(), String> {
        let members: Vec<&str> = plan
            .serials
            .iter()
            .map(|serial| self.host.devices().into_iter().find(|placement| placement.device.serial == *serial).map(|placement| placement.device.id.as_str()))
            .collect::<Option<_>>()
            .ok_or_else(|| format!("a member of the plan ({:?}) is no device of host `{}`", plan.serials, self.host.name))?;
        let window_granularity = self.host.windows[plan.decoder].granularity;
        let model = Region::with_members(self.host, plan.decoder, 0, &members)
            .and_then(|region| region.with_granularity(window_granularity))
            .map_err(|reason| format!("the model has no region over these devices: {reason}"))?;
        if model.size != plan.size {
            return Err(format!("the plan's region has {} bytes, the model's {}", plan.size, model.size));
        }
        let plan = Planned { granularity: model.granularity, ..plan.clone() };
        let names = region::memdev_names(&self.guest_json("cxl list -M", transcript)?);
        let created = self.guest_json(&region::create_command(&plan, &names)?, transcript)?;
        let name = self.checked_or_removed(&plan, &created, transcript)?;
        let device = if plan.mode == "pmem" { region::raw_namespace_script(&name) } else { region::dax_script(plan.mode, &name) };
        let device = self.logged(&device, transcript).map(|output| output.trim().to_owned());
        let checked = device.clone().and_then(|device| self.grant_capabilities(transcript).and_then(|()| self.tag_and_check(model, &created, &name, &device, transcript)));
        let dax = device.ok().filter(|device| device.starts_with("dax"));
        let removed = self.logged(&region::teardown_script(plan.mode, &name, dax.as_deref()), transcript);
        checked.and(removed.map(drop))
    }

    /// The created region's name when it is what the plan says; one that differs is taken away
    /// again (the next window's region or suite needs its decoders) and the difference is the
    /// error.
    fn checked_or_removed(&self, plan: &Planned, created: &serde_json::Value, transcript: &mut String) -> Result<String, String> {
        region::check_created(plan, created).inspect_err(|_| {
            if let Some(name) = region::created_name(created) {
                let _ = self.logged(&region::teardown_script(plan.mode, name, None), transcript);
            }
        })
    }

    fn tag_and_check(&self, model: Region, created: &serde_json::Value, name: &str, device: &str, transcript: &mut String) -> Result<(), String> {
        let base = decode::region_resource(created)?;
        let model = model.placed_at(base).ok_or_else(|| format!("the guest's {name} at {base:#x} is off the 256 MiB unit"))?;
        if device.starts_with("dax") {
            self.logged(&region::devdax_command(device), transcript)?;
        }
        let (start, size) = decode::parse_extent(&self.logged(&decode::extent_script(device), transcript)?)?;
        if (start, size) != (model.base, model.size) {
            return Err(format!("{device} covers [{start:#x}, +{size:#x}), not all of {name} [{:#x}, +{:#x}): some granules could not be tagged", model.base, model.size));
        }
        self.install_guest_tool()?;
        let tagged = Instant::now();
        self.logged_for(&decode::tag_command(region::GUEST_TOOL, device, name, &model), TAG_TIMEOUT, transcript)?;
        let tag_time = tagged.elapsed();
        let read = Instant::now();
        if let Some(index) = self.move_tag {
            transcript.push_str(&format!("{}\n", decode::move_tag(&model, &self.context.files.memory_dir(), index)?));
        }
        let checked = decode::check_granules(&model, name, &self.context.files.memory_dir())?;
        transcript.push_str(&format!(
            "guest: tagged {} granules in {:.2} s; host: read every granule's tag where the model puts it ({} granules of {} bytes, {} MiB) in {:.2} s\n",
            checked.granules,
            tag_time.as_secs_f64(),
            checked.granules,
            model.granularity,
            checked.bytes >> 20,
            read.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    fn dax_pattern(&self, plan: &Planned, dax: &str, transcript: &mut String) -> Result<(), String> {
        if plan.mode == "ram" {
            // A RAM region's DAX device may have gone to kmem already; the pattern needs devdax.
            self.logged(&region::devdax_command(dax), transcript)?;
        }
        self.install_guest_tool()?;
        self.logged(&format!("{} pattern /dev/{dax} {}", region::GUEST_TOOL, region::PATTERN_BYTES), transcript)?;
        if plan.mode == "ram" {
            let nodes = |transcript: &mut String| self.logged(region::NODE_COUNT_SCRIPT, transcript).map(|count| count.trim().parse::<u32>().unwrap_or(0));
            let before = nodes(transcript)?;
            self.logged(&region::online_command(dax), transcript)?;
            let after = nodes(transcript)?;
            if after != before + 1 {
                return Err(format!("onlining {dax} as system RAM gave no new NUMA node ({before} nodes before, {after} after)"));
            }
        }
        Ok(())
    }

    /// Builds the lab's guest program and copies it in, once per guest.
    fn install_guest_tool(&self) -> Result<(), String> {
        let install = || -> anyhow::Result<()> {
            let runner = CommandRunner::new(self.context.files.logs_dir());
            let binary = guest_tool::build(&self.context.paths, &runner)?;
            let destination = format!("{}:{}", self.machine.host, region::GUEST_TOOL);
            control::copy(self.context, &binary.display().to_string(), &destination)?;
            self.shell_output(&format!("chmod 0755 {}", region::GUEST_TOOL)).map(drop)
        };
        self.guest_tool.get_or_init(|| install().map_err(|error| format!("installing the guest program: {error:#}"))).clone()
    }

    /// A guest command's output, with the command and its output added to `transcript`.
    fn logged(&self, script: &str, transcript: &mut String) -> Result<String, String> {
        self.logged_for(script, HELPER_TIMEOUT, transcript)
    }

    fn logged_for(&self, script: &str, timeout: Duration, transcript: &mut String) -> Result<String, String> {
        transcript.push_str(&format!("$ {script}\n"));
        let output = self.shell_output_for(script, timeout).map_err(|error| format!("{error:#}"))?;
        transcript.push_str(&output);
        Ok(output)
    }

    fn guest_json(&self, script: &str, transcript: &mut String) -> Result<serde_json::Value, String> {
        let output = self.logged(script, transcript)?;
        serde_json::from_str(&output).map_err(|error| format!("`{script}` printed no JSON ({error})"))
    }

    /// A guest command with its placeholders filled.
    fn filled(&self, command: &GuestCommand) -> Result<GuestCommand, String> {
        let fill_all = |texts: &[String]| texts.iter().map(|text| self.fill(text)).collect::<Result<Vec<_>, _>>();
        Ok(GuestCommand {
            script: self.fill(&command.script)?,
            stdout_contains: fill_all(&command.stdout_contains)?,
            output_lacks: fill_all(&command.output_lacks)?,
            ..command.clone()
        })
    }

    fn guest_step(&self, command: &GuestCommand) -> (Outcome, String) {
        let command = match self.filled(command) {
            Ok(command) => command,
            Err(error) => return (Outcome::Failed(error), String::new()),
        };
        let script = &command.script;
        match self.exec(script, command.timeout) {
            Ok(output) => {
                let stdout = String::from_utf8_lossy(&output.stdout);
                let stderr = String::from_utf8_lossy(&output.stderr);
                let outcome = judge(&command, control::exit_code_of(&output), &stdout, &stderr);
                (outcome, clip(format!("$ {script}\n{stdout}{stderr}")))
            }
            Err(error) => (Outcome::Failed(format!("{error:#}")), String::new()),
        }
    }

    fn qmp_step(&self, command: &str, arguments: Option<&serde_json::Value>) -> (Outcome, String) {
        let arguments = match arguments.map(|arguments| self.fill(&arguments.to_string())).transpose() {
            Ok(arguments) => arguments,
            Err(error) => return (Outcome::Failed(error), String::new()),
        };
        let shown = format!("qmp {command} {}", arguments.as_deref().unwrap_or(""));
        match control::qmp(self.context, Some(&self.machine.host), command, arguments.as_deref()) {
            Ok(reply) => (Outcome::Passed, format!("{shown}\n{reply}")),
            Err(error) => (Outcome::Failed(format!("{error:#}")), shown),
        }
    }

    fn topology_step(&self) -> (Outcome, String) {
        let asked = self.shell_output(topology::LISTING_COMMAND).and_then(|listing| {
            let granularities = self.shell_output(topology::GRANULARITY_SCRIPT)?;
            Ok((serde_json::from_str::<serde_json::Value>(&listing)?, listing, granularities))
        });
        let (json, listing, granularities) = match asked {
            Ok(asked) => asked,
            Err(error) => return (Outcome::Failed(format!("asking the guest: {error:#}")), String::new()),
        };
        let output = clip(format!("$ {}\n{listing}\n$ {}\n{granularities}", topology::LISTING_COMMAND, topology::GRANULARITY_SCRIPT));
        let guest = match topology::guest_facts(&json, &granularities) {
            Ok(guest) => guest,
            Err(error) => return (Outcome::Failed(format!("reading `cxl list`: {error}")), output),
        };
        let differences = topology::diff(&topology::expected_facts(self.expected), &guest);
        if differences.is_empty() {
            return (Outcome::Passed, output);
        }
        let reason = format!("the guest's `cxl list` differs from the model (`profile expect`):\n  {}", differences.join("\n  "));
        (Outcome::Failed(reason), output)
    }

    /// Fails on a kernel WARN, BUG or oops after the first `seen` lines of the kernel log.
    /// What it read counts as seen: the next suite starts where this one ended.
    fn kernel_log_since(&self, seen: usize, allowed: &[String]) -> (Outcome, String) {
        // Only the new lines cross the guest agent: the log with dynamic debug on is large.
        match self.shell_output(&kernel::log_after_script(seen)) {
            Ok(log) => {
                self.log_seen.set(seen + log.lines().count());
                // On a capability-checked host, tokens go through raw mailbox commands (the
                // regions check presents one too): their warning is the protocol's known cost.
                let raw_commands = self.capability_service().map(|_| kernel::RAW_COMMAND_WARNING.to_owned());
                let allowed: Vec<String> = allowed.iter().cloned().chain(raw_commands).collect();
                let problems = kernel::problems(&log, &allowed);
                if problems.is_empty() {
                    (Outcome::Passed, String::new())
                } else {
                    (Outcome::Failed(format!("the kernel logged:\n  {}", problems.join("\n  "))), clip(log))
                }
            }
            Err(error) => (Outcome::Failed(format!("reading the kernel log: {error:#}")), String::new()),
        }
    }

    /// Copies what explains a failure into `dir`: the serial log, dmesg, the QEMU argv, the
    /// stack's lock file and `cxl list`. What cannot be had is noted in `missing.txt`.
    fn keep_evidence(&self, state: &LabState, dir: &Path) -> Vec<PathBuf> {
        let stack = state.plan.boot_stack.stack;
        let lock = crate::stack::lock::lock_path(&self.context.paths.images_dir(), stack);
        let copies = [
            ("serial.log".to_owned(), self.machine.serial_log.clone()),
            ("qemu-argv.txt".to_owned(), self.machine.run_dir().argv_file()),
            (format!("{stack}.lock"), lock),
        ];
        let mut kept = Vec::new();
        let mut missing = Vec::new();
        if let Err(error) = fs_err::create_dir_all(dir) {
            self.context.shell.warn(format!("keeping the evidence in {}: {error}", dir.display()));
            return kept;
        }
        for (name, source) in copies {
            match fs_err::copy(&source, dir.join(&name)) {
                Ok(_) => kept.push(dir.join(&name)),
                Err(error) => missing.push(format!("{name}: {error}")),
            }
        }
        for (name, script) in [("dmesg.txt", "dmesg"), ("cxl-list.json", "cxl list -vvv")] {
            match self.shell_output(script).map(|text| fs_err::write(dir.join(name), text)) {
                Ok(Ok(())) => kept.push(dir.join(name)),
                Ok(Err(error)) => missing.push(format!("{name}: {error}")),
                Err(error) => missing.push(format!("{name}: {error:#}")),
            }
        }
        if !missing.is_empty() && fs_err::write(dir.join("missing.txt"), missing.join("\n") + "\n").is_ok() {
            kept.push(dir.join("missing.txt"));
        }
        kept
    }

    fn exec(&self, script: &str, timeout: Duration) -> anyhow::Result<crate::vm::agent::GuestExecOutput> {
        let argv = ["sh".to_owned(), "-c".to_owned(), script.to_owned()];
        control::exec(self.context, Some(&self.machine.host), &argv, timeout)
    }

    /// A helper command's standard output; a non-zero exit is an error quoting its stderr.
    fn shell_output(&self, script: &str) -> anyhow::Result<String> {
        self.shell_output_for(script, HELPER_TIMEOUT)
    }

    fn shell_output_for(&self, script: &str, timeout: Duration) -> anyhow::Result<String> {
        let output = self.exec(script, timeout)?;
        if output.exit_code != Some(0) {
            bail!("`{script}` in the guest exited {}: {}", control::exit_code_of(&output), String::from_utf8_lossy(&output.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

impl CapabilityGuest for Guest<'_> {
    fn host(&self) -> &str {
        &self.machine.host
    }

    fn run(&self, script: &str, transcript: &mut String) -> Result<(i32, String), String> {
        transcript.push_str(&format!("[{}] $ {script}\n", self.machine.host));
        let output = self.exec(script, HELPER_TIMEOUT).map_err(|error| format!("{error:#}"))?;
        let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr));
        transcript.push_str(&stdout);
        transcript.push_str(&stderr);
        Ok((output.exit_code.unwrap_or(-1), stdout))
    }

    fn install_guest_tool(&self) -> Result<(), String> {
        Guest::install_guest_tool(self)
    }

    fn region_plan(&self) -> Option<Planned<'_>> {
        self.expected.root_decoders.iter().find_map(|decoder| match &decoder.region {
            RegionPlan::Region { mode, memdevs, ways, granularity, size } => Some(Planned { decoder: decoder.index, mode, serials: memdevs, ways: *ways, granularity: *granularity, size: *size }),
            RegionPlan::None { .. } => None,
        })
    }
}

/// Runs one step's work and times it.
fn timed(name: &str, work: impl FnOnce() -> (Outcome, String)) -> StepResult {
    let started = Instant::now();
    let (outcome, output) = work();
    StepResult { name: name.to_owned(), outcome, duration: started.elapsed(), output }
}

/// A guest command's outcome: its exit code and what its output must and must not hold.
fn judge(command: &GuestCommand, exit_code: i32, stdout: &str, stderr: &str) -> Outcome {
    if exit_code != command.exit_code {
        let said = stderr.trim().lines().last().or_else(|| stdout.trim().lines().last()).unwrap_or("no output");
        return Outcome::Failed(format!("exit code {exit_code}, expected {}: {said}", command.exit_code));
    }
    if let Some(missing) = command.stdout_contains.iter().find(|text| !stdout.contains(text.as_str())) {
        return Outcome::Failed(format!("the output lacks `{missing}`"));
    }
    if let Some(present) = command.output_lacks.iter().find(|text| stdout.contains(text.as_str()) || stderr.contains(text.as_str())) {
        return Outcome::Failed(format!("the output holds `{present}`"));
    }
    Outcome::Passed
}

pub(super) fn clip(mut text: String) -> String {
    if text.len() > OUTPUT_LIMIT {
        let mut end = OUTPUT_LIMIT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("\n[cut: more than 64 KiB]");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(exit_code: i32, contains: &[&str], lacks: &[&str]) -> GuestCommand {
        GuestCommand {
            script: "true".to_owned(),
            timeout: Duration::from_secs(1),
            exit_code,
            stdout_contains: contains.iter().map(|text| text.to_string()).collect(),
            output_lacks: lacks.iter().map(|text| text.to_string()).collect(),
        }
    }

    #[test]
    fn an_expected_view_of_another_profile_or_other_hosts_is_refused() {
        let load = |name: &str| crate::profile::load_topology(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../profiles").join(format!("{name}.yaml"))).unwrap();
        let (seed, shared) = (load("seed"), load("shared"));
        assert!(check_view_fits(&expected_view(&seed), &seed).is_ok());
        let other = check_view_fits(&expected_view(&shared), &seed).unwrap_err().to_string();
        assert_eq!(other, "it is of profile `shared`, not `seed`");
        let mut fewer = expected_view(&shared);
        fewer.hosts.pop();
        assert!(check_view_fits(&fewer, &shared).unwrap_err().to_string().starts_with("it lists hosts [\"host0\"], the profile has"));
    }

    #[test]
    fn guest_commands_are_judged_by_exit_code_and_output() {
        assert_eq!(judge(&command(0, &["cxl_core"], &[]), 0, "cxl_core 1\n", ""), Outcome::Passed);
        assert_eq!(judge(&command(0, &[], &[]), 2, "", "cxl: no such bus\n"), Outcome::Failed("exit code 2, expected 0: cxl: no such bus".to_owned()));
        assert_eq!(judge(&command(0, &["root0"], &[]), 0, "[]\n", ""), Outcome::Failed("the output lacks `root0`".to_owned()));
        assert_eq!(judge(&command(1, &[], &["error"]), 1, "", "error: x"), Outcome::Failed("the output holds `error`".to_owned()));
    }

    #[test]
    fn long_output_is_clipped_on_a_character_boundary() {
        let clipped = clip("é".repeat(OUTPUT_LIMIT));
        assert!(clipped.ends_with("[cut: more than 64 KiB]"));
        assert!(clipped.len() < OUTPUT_LIMIT + 40);
    }
}
