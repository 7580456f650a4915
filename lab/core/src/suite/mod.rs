//! Suites: ordered steps run against a lab, and their results as CI systems read them.
//!
//! - [`format`] `suites/*.yaml` → [`format::Suite`] (file:line:column errors);
//! - [`run`] `lab run`: boot or reuse a lab, run each step (a guest command through the guest
//!   agent, a QMP command, a check against the model), keep the evidence of failures;
//! - [`topology`] the guest's `cxl list` against the model's expected view, field by field;
//! - [`decode`] the `decode` check's host side: every granule's tag read from the backing file
//!   at the offset the model predicts;
//! - [`region`] the `regions` check's guest commands and readers; [`guest_tool`] the lab's
//!   guest program (`lab/guest`), built on the host and copied in;
//! - [`ndctl`] ndctl's own CXL suite (`meson test`) and its per-test log;
//! - [`capability`] the `capability` check: two hosts, tokens presented to the capability-checked
//!   device, reads and writes allowed and denied, refusals, revocation;
//! - [`kernel`] kernel log problems (WARN, BUG, oops) and whether the kernel can commit a region;
//! - [`outcome`] the results model; [`report`] JUnit XML and JSON.
//!
//! Above [`crate::lab`]: a suite drives a lab, a lab knows nothing of suites.

pub mod capability;
pub mod decode;
pub mod format;
pub mod guest_tool;
pub mod kernel;
pub mod ndctl;
pub mod outcome;
pub mod region;
pub mod report;
pub mod run;
pub mod topology;
