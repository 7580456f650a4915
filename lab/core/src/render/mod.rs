//! From a validated profile to the exact QEMU argv of each host, through the minijinja templates in
//! `templates/` (strict undefined: a missing variable is an error, never an empty argument).
//!
//! The template prints one argument per line; the renderer splits lines into the argv vector, so no
//! shell ever parses it. The memory backends are files under the lab's memory directory with
//! share=on; QMP and the guest agent are unix sockets in the machine's private run directory.

pub mod picture;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use cxl_lab_model::{ByteSize, Host, Topology};
use minijinja::{context, Environment, UndefinedBehavior};
use serde::Serialize;


use crate::layout::MachineRunDir;
use crate::qemu::{features, QemuVersion};
use crate::profile::Profile;

/// The template of the QEMU argv, relative to `templates/`.
pub const ARGV_TEMPLATE: &str = "qemu-argv.j2";
/// The template of the guest kernel command line.
pub const CMDLINE_TEMPLATE: &str = "kernel-cmdline.j2";

/// The CPU model a KVM machine runs with. The KVM probe boots with the same model: a probe
/// without it passed on a host where `-cpu host` then failed to set an MSR at boot.
pub const KVM_CPU_MODEL: &str = "host";

/// The accelerator a machine runs with, once `auto` has been resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

/// Everything around the topology that the argv needs: which QEMU, where things live, what boots.
#[derive(Clone, Debug)]
pub struct RenderInputs {
    pub qemu_binary: PathBuf,
    pub qemu_version: QemuVersion,
    pub run_dir: MachineRunDir,
    /// Where memory backend files live; shared by the hosts of one lab.
    pub memory_dir: PathBuf,
    pub accel: Accel,
    /// Start with the CPUs stopped (`-S`).
    pub paused: bool,
    /// What the guest boots; `None` renders a machine with no guest (for validation runs).
    pub boot: Option<BootMedia>,
}

#[derive(Clone, Debug, Serialize)]
pub struct BootMedia {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    /// The machine's qcow2 overlay of the base root filesystem.
    pub rootfs_overlay: PathBuf,
    /// Served over 9p with the tag `modshare`, mounted at /lib/modules.
    pub modules_dir: PathBuf,
    /// Served over 9p with the tag `datashare`.
    pub data_dir: PathBuf,
    /// Host port forwarded to the guest's SSH, bound to 127.0.0.1.
    pub ssh_port: Option<u16>,
    pub extra_cmdline: Vec<String>,
}

/// One host's rendered command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderedMachine {
    /// `argv[0]` is the QEMU binary.
    pub argv: Vec<String>,
}

impl RenderedMachine {
    /// The argv quoted for a POSIX shell, one argument group per line, ready to paste.
    pub fn shell_command(&self) -> String {
        let mut lines: Vec<String> = Vec::new();
        let mut arguments = self.argv.iter().map(|arg| crate::sys::runner::quote(arg)).peekable();
        if let Some(program) = arguments.next() {
            lines.push(program);
        }
        while let Some(argument) = arguments.next() {
            // Keep an option and its value on one line.
            match arguments.peek() {
                Some(value) if argument.starts_with('-') && !value.starts_with('-') => {
                    let value = arguments.next().unwrap_or_default();
                    lines.push(format!("  {argument} {value}"));
                }
                _ => lines.push(format!("  {argument}")),
            }
        }
        lines.join(" \\\n")
    }
}

#[derive(Serialize)]
struct BackendView {
    id: String,
    size: u64,
    path: PathBuf,
}

/// What `profile validate` and `profile render` say about a profile with `qemu_extra`: those
/// arguments reach QEMU as written, checked by no rule, on the word of the profile's author.
pub fn unchecked_arguments_note(topology: &Topology) -> Option<String> {
    let extra = &topology.qemu_extra;
    (!extra.is_empty()).then(|| {
        let shown: Vec<String> = extra.iter().map(|argument| format!("{argument:?}")).collect();
        format!("profile `{}` adds {} raw QEMU argument(s) that no rule checks (qemu_extra): {}", topology.name, extra.len(), shown.join(" "))
    })
}

/// Renders the argv of host `host_index` of `profile`.
pub fn render_machine(profile: &Profile, host_index: usize, inputs: &RenderInputs) -> anyhow::Result<RenderedMachine> {
    render_with_templates(&profile.templates_dir, &profile.topology, host_index, inputs)
}

/// Renders with an explicit templates directory (tests use the checkout's).
pub fn render_with_templates(
    templates_dir: &Path,
    topology: &Topology,
    host_index: usize,
    inputs: &RenderInputs,
) -> anyhow::Result<RenderedMachine> {
    let host = topology
        .hosts
        .get(host_index)
        .with_context(|| format!("profile `{}` has no host number {host_index}", topology.name))?;
    let missing = features::missing_features(topology, host, inputs.qemu_version);
    if !missing.is_empty() {
        bail!("profile `{}` cannot run on this QEMU:\n  {}", topology.name, missing.join("\n  "));
    }
    let environment = environment(templates_dir);
    let backends = topology
        .backends_of(host)
        .into_iter()
        .map(|backend| {
            let path = crate::vm::backing::backend_file(&inputs.memory_dir, &backend.id)?;
            Ok(BackendView { id: backend.id.clone(), size: backend.size, path })
        })
        .collect::<anyhow::Result<Vec<BackendView>>>()?;
    let cmdline = match &inputs.boot {
        Some(boot) => Some(render_cmdline(&environment, topology, host, boot)?),
        None => None,
    };
    let run = &inputs.run_dir;
    let text = environment
        .get_template(ARGV_TEMPLATE)
        .and_then(|template| {
            template.render(context! {
                profile => &topology.name,
                host => host,
                backends => backends,
                qemu => context! {
                    binary => &inputs.qemu_binary,
                    persistent_memdev => features::has_persistent_memdev(inputs.qemu_version),
                },
                run => context! {
                    qmp_socket => run.qmp_socket(),
                    agent_socket => run.agent_socket(),
                    serial_log => run.serial_log(),
                },
                accel => inputs.accel,
                kvm_cpu => KVM_CPU_MODEL,
                paused => inputs.paused,
                boot => &inputs.boot,
                cmdline => cmdline,
                qemu_extra => &topology.qemu_extra,
            })
        })
        .map_err(|error| template_error(templates_dir, error))?;
    Ok(RenderedMachine { argv: split_argv(&text) })
}

fn render_cmdline(environment: &Environment<'_>, topology: &Topology, host: &Host, boot: &BootMedia) -> anyhow::Result<String> {
    let text = environment
        .get_template(CMDLINE_TEMPLATE)
        .and_then(|template| {
            template.render(context! {
                host => host,
                profile_cmdline => &topology.kernel_cmdline,
                extra_cmdline => &boot.extra_cmdline,
            })
        })
        .map_err(|error| template_error(Path::new("templates"), error))?;
    Ok(text.split_whitespace().collect::<Vec<_>>().join(" "))
}

fn environment(templates_dir: &Path) -> Environment<'static> {
    let mut environment = Environment::new();
    environment.set_undefined_behavior(UndefinedBehavior::Strict);
    environment.set_trim_blocks(true);
    environment.set_lstrip_blocks(true);
    environment.set_loader(minijinja::path_loader(templates_dir));
    environment.add_filter("size", |bytes: u64| ByteSize(bytes).to_string());
    environment
}

fn template_error(templates_dir: &Path, error: minijinja::Error) -> anyhow::Error {
    let mut message = format!("rendering {}: {error}", templates_dir.display());
    if let Some(detail) = error.display_debug_info().to_string().lines().next() {
        if !detail.is_empty() {
            message.push_str(&format!(" ({detail})"));
        }
    }
    anyhow::anyhow!(message)
}

/// One argument per non-empty line; leading and trailing blanks of a line are layout, not data.
fn split_argv(text: &str) -> Vec<String> {
    text.lines().map(str::trim).filter(|line| !line.is_empty()).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_raw_qemu_arguments() {
        let source = "name: raw\nmachine: {memory: 1G, maxmem: 2G}\nhost_bridges: []\n";
        let plain = cxl_lab_model::parse_profile("raw.yaml", source, "raw").unwrap();
        assert_eq!(unchecked_arguments_note(&plain), None);
        let with_extra = format!("{source}qemu_extra: [-device, \"pci-testdev,id=t\\n\"]\n");
        let topology = cxl_lab_model::parse_profile("raw.yaml", &with_extra, "raw").unwrap();
        assert_eq!(
            unchecked_arguments_note(&topology).as_deref(),
            Some(r#"profile `raw` adds 2 raw QEMU argument(s) that no rule checks (qemu_extra): "-device" "pci-testdev,id=t\n""#)
        );
    }
}
