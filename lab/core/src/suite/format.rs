//! Suites as data: `suites/<name>.yaml` (`docs/suites.md`), parsed into [`Suite`] with the file,
//! line and column of every error, as profiles are.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;

use crate::layout::Layout;

/// How long a guest command may run when its step says nothing.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// One suite: ordered steps, each run only when what it requires holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Suite {
    pub name: String,
    pub description: String,
    /// What the whole suite needs; unmet, every step skips with the reason.
    pub requires: Vec<Requirement>,
    /// Kernel warnings the suite causes on purpose: a WARN whose message holds one of these is
    /// not a problem of the kernel-log check (the raw mailbox command's "raw command path used").
    pub kernel_log_allows: Vec<String>,
    pub steps: Vec<Step>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub name: String,
    pub action: Action,
    pub requires: Vec<Requirement>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// A shell command line run in the guest through the guest agent.
    Guest(GuestCommand),
    /// A QMP command on the host's QEMU; QEMU's refusal fails the step.
    Qmp { command: String, arguments: Option<Value> },
    /// A check of the guest against the model.
    Check(Check),
}

#[derive(Clone, Debug, PartialEq)]
pub struct GuestCommand {
    /// Run as `sh -c SCRIPT`; `@name@` placeholders are filled from the model first.
    pub script: String,
    pub timeout: Duration,
    pub exit_code: i32,
    /// Text the standard output must hold, each.
    pub stdout_contains: Vec<String>,
    /// Text standard output and error must not hold.
    pub output_lacks: Vec<String>,
}

/// The checks against the model that a step can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// `cxl list` (memdevs, ports, dports, root decoders) equals the model's expected view.
    Topology,
    /// No kernel WARN, BUG or oops in the whole kernel log so far.
    KernelLog,
    /// In each window the model gives a region: the region, a DAX device with a pattern written
    /// and read back, a RAM region onlined as a new NUMA node. One result per window; a window
    /// that holds none skips with the model's reason.
    Regions,
    /// In each window the model gives a region: the region, a tag written by the guest at the
    /// start of every granule, each read back on the host from the backing file at the offset
    /// the model predicts. One result per window, as `Regions`.
    Decode,
    /// ndctl's own CXL suite against `cxl_test`: one result per test of it.
    NdctlCxl,
    /// Two hosts share a capability-checked backend and tokens decide who touches what
    /// (`docs/capability-lab.md`): one result per claim, driven from the backend's first host.
    Capability,
}

/// What a suite or step needs of the lab; unmet, it skips with the reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// The guest kernel can commit a region in a VM (`CONFIG_CXL_REGION_INVALIDATION_TEST=y`).
    RegionCommit,
    /// The host has a device with persistent capacity (`@pmem_id@`, `@pmem_serial@`).
    Pmem,
    /// The host has a device with dynamic capacity (`@dcd_id@`, `@dcd_serial@`).
    DynamicCapacity,
    /// The guest kernel takes dynamic capacity: the device has a `dynamic_ram_a` partition.
    DynamicCapacityKernel,
    /// The host's devices are capability-checked: a `capabilities: true` backend on a QEMU with
    /// the lab's capability device, its service running.
    CapabilityDevice,
}

impl Requirement {
    const NAMES: [(&'static str, Requirement); 5] = [
        ("region-commit", Requirement::RegionCommit),
        ("pmem", Requirement::Pmem),
        ("dynamic-capacity", Requirement::DynamicCapacity),
        ("dynamic-capacity-kernel", Requirement::DynamicCapacityKernel),
        ("capability-device", Requirement::CapabilityDevice),
    ];
}

impl Check {
    const NAMES: [(&'static str, Check); 6] = [
        ("topology", Check::Topology),
        ("kernel-log", Check::KernelLog),
        ("regions", Check::Regions),
        ("decode", Check::Decode),
        ("ndctl-cxl", Check::NdctlCxl),
        ("capability", Check::Capability),
    ];
}

/// The `@name@` placeholders a step's text may hold, filled from the model when the step runs:
/// the host's first device with persistent capacity, its dynamic capacity device (and one of
/// that device's region sizes), the host's name.
pub const PLACEHOLDERS: [&str; 6] = ["@pmem_id@", "@pmem_serial@", "@dcd_id@", "@dcd_serial@", "@dcd_region_size@", "@host@"];

/// The first `@name@` in `text` that is no placeholder: a typo would reach the guest's shell.
fn unknown_placeholder(text: &str) -> Option<&str> {
    let mut from = 0;
    while let Some(found) = text[from..].find('@') {
        let start = from + found;
        let name_length = text[start + 1..].find(|c: char| !(c.is_ascii_lowercase() || c == '_')).unwrap_or(text.len() - start - 1);
        if name_length > 0 && text[start + 1 + name_length..].starts_with('@') {
            let token = &text[start..start + name_length + 2];
            if !PLACEHOLDERS.contains(&token) {
                return Some(token);
            }
            from = start + name_length + 2;
        } else {
            from = start + 1;
        }
    }
    None
}

/// A suite file that cannot be used: `file:line:column: message`.
pub type SuiteError = crate::yaml::FileError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SuiteFile {
    #[serde(default)]
    description: String,
    #[serde(default)]
    requires: Vec<Spanned<String>>,
    #[serde(default)]
    kernel_log_allows: Vec<String>,
    steps: Spanned<Vec<StepSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepSpec {
    name: Spanned<String>,
    guest: Option<String>,
    qmp: Option<String>,
    arguments: Option<Value>,
    check: Option<Spanned<String>>,
    #[serde(default)]
    requires: Vec<Spanned<String>>,
    /// Seconds.
    timeout: Option<u64>,
    exit: Option<i32>,
    #[serde(default)]
    stdout_contains: Vec<String>,
    #[serde(default)]
    output_lacks: Vec<String>,
}

/// Loads suites by name (`smoke`, from `suites/`) or path (`my/suite.yaml`).
pub fn load(paths: &Layout, name_or_path: &str) -> anyhow::Result<Suite> {
    let path = paths.suite_path(name_or_path);
    let text = fs_err::read_to_string(&path).map_err(|error| match list(paths) {
        Ok(known) if !path.exists() => anyhow::anyhow!("no suite `{name_or_path}` ({error}; known suites: {})", known.join(", ")),
        _ => error.into(),
    })?;
    let name = path.file_stem().map(|stem| stem.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(parse(&path.display().to_string(), &name, &text)?)
}

/// The suites in `suites/`, sorted.
pub fn list(paths: &Layout) -> std::io::Result<Vec<String>> {
    crate::yaml::names_in(&paths.suites_dir())
}

/// Parses one suite; `file` is how errors name it.
pub fn parse(file: &str, name: &str, text: &str) -> Result<Suite, SuiteError> {
    let error_at = |(line, column): (u64, u64), message: String| SuiteError { file: file.to_owned(), line, column, message };
    let parsed: SuiteFile = serde_saphyr::from_str(text)
        .map_err(|error| error_at(crate::yaml::error_location(&error), crate::yaml::error_message(&error.to_string())))?;
    if parsed.steps.value.is_empty() {
        return Err(error_at(at(&parsed.steps), "steps: a suite needs at least one step".to_owned()));
    }
    let steps = parsed.steps.value.into_iter().map(|step| step_from(step).map_err(|(at, message)| error_at(at, message)));
    Ok(Suite {
        name: name.to_owned(),
        description: parsed.description,
        requires: requirements(&parsed.requires).map_err(|(at, message)| error_at(at, message))?,
        kernel_log_allows: parsed.kernel_log_allows,
        steps: steps.collect::<Result<_, _>>()?,
    })
}

type Located = ((u64, u64), String);

fn at<T>(spanned: &Spanned<T>) -> (u64, u64) {
    (spanned.referenced.line(), spanned.referenced.column())
}

fn step_from(spec: StepSpec) -> Result<Step, Located> {
    let where_ = at(&spec.name);
    let name = spec.name.value.clone();
    let kinds = [spec.guest.is_some(), spec.qmp.is_some(), spec.check.is_some()].iter().filter(|&&given| given).count();
    if kinds != 1 {
        return Err((where_, format!("step `{name}`: give exactly one of `guest`, `qmp` or `check`")));
    }
    let guest_only = spec.timeout.is_some() || spec.exit.is_some() || !spec.stdout_contains.is_empty() || !spec.output_lacks.is_empty();
    if guest_only && spec.guest.is_none() {
        return Err((where_, format!("step `{name}`: `timeout`, `exit`, `stdout_contains` and `output_lacks` belong to `guest` steps")));
    }
    if spec.arguments.is_some() && spec.qmp.is_none() {
        return Err((where_, format!("step `{name}`: `arguments` belong to `qmp` steps")));
    }
    let arguments_text = spec.arguments.as_ref().map(Value::to_string);
    let texts = spec.guest.iter().chain(&spec.stdout_contains).chain(&spec.output_lacks).chain(&arguments_text);
    if let Some(token) = texts.filter_map(|text| unknown_placeholder(text)).next() {
        return Err((where_, format!("step `{name}`: unknown placeholder `{token}` (known: {})", PLACEHOLDERS.join(", "))));
    }
    let action = if let Some(script) = spec.guest {
        Action::Guest(GuestCommand {
            script,
            timeout: spec.timeout.map_or(DEFAULT_TIMEOUT, Duration::from_secs),
            exit_code: spec.exit.unwrap_or(0),
            stdout_contains: spec.stdout_contains,
            output_lacks: spec.output_lacks,
        })
    } else if let Some(command) = spec.qmp {
        if !matches!(spec.arguments, None | Some(Value::Object(_))) {
            return Err((where_, format!("step `{name}`: `arguments` must be a mapping (QMP's arguments object)")));
        }
        Action::Qmp { command, arguments: spec.arguments }
    } else {
        let check = spec.check.expect("one kind is given");
        Action::Check(named(&Check::NAMES, &check, "check")?)
    };
    Ok(Step { name, action, requires: requirements(&spec.requires)? })
}

fn requirements(words: &[Spanned<String>]) -> Result<Vec<Requirement>, Located> {
    words.iter().map(|word| named(&Requirement::NAMES, word, "requirement")).collect()
}

/// The value a word names in `table`, or an error listing the words there are.
fn named<T: Copy>(table: &[(&str, T)], word: &Spanned<String>, what: &str) -> Result<T, Located> {
    table.iter().find(|(name, _)| *name == word.value).map(|(_, value)| *value).ok_or_else(|| {
        let known: Vec<&str> = table.iter().map(|(name, _)| *name).collect();
        (at(word), format!("unknown {what} `{}` (known: {})", word.value, known.join(", ")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const SMOKE: &str = "\
description: modules and cxl list
steps:
  - name: cxl list answers
    guest: cxl list
    timeout: 30
  - name: poison
    qmp: cxl-inject-poison
    arguments: { path: /machine/peripheral/@pmem_id@, start: 0, length: 64 }
    requires: [pmem]
  - name: topology
    check: topology
";

    #[test]
    fn parses_the_three_kinds_of_step() {
        let suite = parse("smoke.yaml", "smoke", SMOKE).unwrap();
        assert_eq!(suite.steps.len(), 3);
        let Action::Guest(guest) = &suite.steps[0].action else { panic!("{:?}", suite.steps[0]) };
        assert_eq!((guest.script.as_str(), guest.timeout, guest.exit_code), ("cxl list", Duration::from_secs(30), 0));
        let Action::Qmp { command, arguments } = &suite.steps[1].action else { panic!() };
        assert_eq!(command, "cxl-inject-poison");
        assert_eq!(arguments.as_ref().unwrap()["length"], 64);
        assert_eq!(suite.steps[1].requires, [Requirement::Pmem]);
        assert_eq!(suite.steps[2].action, Action::Check(Check::Topology));
    }

    #[test]
    fn an_unknown_placeholder_is_an_error_at_its_step() {
        let typo = SMOKE.replace("check: topology", "guest: \"echo @pmem_idd@ user@host\"");
        let error = parse("s.yaml", "s", &typo).unwrap_err();
        assert!(error.to_string().starts_with("s.yaml:10:"), "{error}");
        assert!(error.to_string().contains("unknown placeholder `@pmem_idd@` (known: @pmem_id@, "), "{error}");
        assert_eq!(unknown_placeholder("cxl list -m @pmem_serial@ && echo \"$@\" a@b.c @host@"), None);
        assert_eq!(unknown_placeholder("@pmem_id@@bad@"), Some("@bad@"));
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let unknown_check = SMOKE.replace("check: topology", "check: topolgy");
        let error = parse("suites/smoke.yaml", "smoke", &unknown_check).unwrap_err();
        assert_eq!(error.to_string(), "suites/smoke.yaml:11:12: unknown check `topolgy` (known: topology, kernel-log, regions, decode, ndctl-cxl, capability)");

        let two_kinds = SMOKE.replace("    timeout: 30\n", "    qmp: query-status\n");
        let error = parse("s.yaml", "s", &two_kinds).unwrap_err();
        assert_eq!((error.line, error.message.as_str()), (3, "step `cxl list answers`: give exactly one of `guest`, `qmp` or `check`"));

        let unknown_field = SMOKE.replace("timeout: 30", "timeout: 30\n    expect: 0");
        let error = parse("s.yaml", "s", &unknown_field).unwrap_err();
        assert_eq!(error.line, 6, "{error}");
        assert!(error.message.contains("expect"), "{error}");
    }

    #[test]
    fn a_suite_may_allow_the_warnings_it_causes() {
        let allowing = format!("kernel_log_allows: [\"raw command path used\"]\n{SMOKE}");
        assert_eq!(parse("s.yaml", "s", &allowing).unwrap().kernel_log_allows, ["raw command path used"]);
        assert!(parse("s.yaml", "s", SMOKE).unwrap().kernel_log_allows.is_empty());
    }

    #[test]
    fn the_shipped_suites_parse() {
        let layout = Layout::for_workspace(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."));
        let names = list(&layout).unwrap();
        assert!(names.iter().any(|name| name == "smoke"), "{names:?}");
        for name in names {
            load(&layout, &name).unwrap_or_else(|error| panic!("{error:#}"));
        }
    }
}
