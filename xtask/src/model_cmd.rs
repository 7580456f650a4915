//! `cargo xtask model ...`: questions the device model answers without a lab.

use std::process::ExitCode;

use clap::Subcommand;
use std::path::PathBuf;

use cxl_lab_core::model::decode::{parse_address, parse_device_address, report, Region};
use cxl_lab_core::model::scenario::{eval, report as scenario_report};
use cxl_lab_core::sys::atomic_file::replace_file;
use cxl_lab_core::{profile, scenario};

use crate::Context;

#[derive(Subcommand)]
pub enum ModelCommand {
    /// Where an address of a window's region lives: window, host bridge, switch, device, DPA and
    /// backing file, level by level.
    Decode {
        /// A profile name (`interleave`) or path.
        profile: String,
        /// A host physical address (`0x2000`, `8192`, `1G`); relative to the window unless
        /// --window-base is given.
        #[arg(long, value_parser = parse_address, required_unless_present = "dpa", conflicts_with = "dpa")]
        hpa: Option<u64>,
        /// A device (QEMU id or serial) and a device physical address: `cxl-pmem0:0x100`.
        #[arg(long, value_parser = parse_device_address)]
        dpa: Option<(String, u64)>,
        /// Which host of a multi-host profile (by name); default: the first.
        #[arg(long)]
        host: Option<String>,
        /// Which fixed window (its index in the profile).
        #[arg(long, default_value_t = 0)]
        window: usize,
        /// The window's HPA (the root decoder's `resource` in `cxl list -D`); default 0.
        #[arg(long, value_parser = parse_address, default_value = "0")]
        window_base: u64,
    },
    /// Run a sharing scenario through every protection mechanism (host decode, multi-headed,
    /// GFAM, capabilities) and compare how well each expresses it.
    Eval {
        /// A scenario name (`pairwise`) or path; `--all` for every scenario in scenarios/.
        #[arg(required_unless_present = "all")]
        scenario: Option<String>,
        #[arg(long, conflicts_with = "scenario")]
        all: bool,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
        /// Write an SVG chart of the bytes each mechanism over-exposes here (a directory with
        /// --all: one `<scenario>.svg` each).
        #[arg(long)]
        chart: Option<PathBuf>,
    },
}

impl ModelCommand {
    pub fn run(self, context: &Context) -> anyhow::Result<ExitCode> {
        match self {
            ModelCommand::Decode { profile, hpa, dpa, host, window, window_base } => {
                let profile = profile::load(&context.paths, &profile)?;
                let file = profile::display_path(&profile.path);
                let region = Region::in_profile(&profile.topology, &file, host.as_deref(), window, window_base)?;
                let hpa = match (hpa, dpa) {
                    (Some(hpa), _) => hpa,
                    (None, Some((device, dpa))) => region.encode(&device, dpa)?,
                    (None, None) => unreachable!("clap requires --hpa or --dpa"),
                };
                let decoded = region.decode(hpa)?;
                context.shell.out(format_args!("{}{}", report::region_text(&region), report::path_text(&decoded).trim_end()));
                Ok(ExitCode::SUCCESS)
            }
            ModelCommand::Eval { scenario, all, json, chart } => {
                let names = if all { scenario::list(&context.paths)? } else { scenario.into_iter().collect() };
                for name in names {
                    evaluate(context, &name, json, chart.as_deref(), all)?;
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}

fn evaluate(context: &Context, name: &str, json: bool, chart: Option<&std::path::Path>, chart_is_dir: bool) -> anyhow::Result<()> {
    let loaded = scenario::load(&context.paths, name)?;
    let outcomes = eval::evaluate(&loaded.scenario);
    if json {
        let value = serde_json::json!({ "scenario": loaded.scenario.name, "mechanisms": outcomes });
        context.shell.out(serde_json::to_string_pretty(&value)?);
    } else {
        context.shell.out(scenario_report::table(&loaded.scenario, &outcomes).trim_end());
    }
    if let Some(chart) = chart {
        let path = if chart_is_dir { chart.join(format!("{}.svg", loaded.scenario.name)) } else { chart.to_owned() };
        replace_file(&path, scenario_report::chart_svg(&loaded.scenario, &outcomes).as_bytes())?;
        context.shell.status("Wrote", path.display());
    }
    Ok(())
}
