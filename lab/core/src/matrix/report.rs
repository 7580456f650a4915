//! A matrix's results for people and programs: `matrix.json`, `index.html` (a grid of profiles
//! by stacks and suites, each cell coloured by its outcome and linking to its logs and results),
//! and the summary table the terminal shows.
//!
//! Every text put into the HTML is escaped ([`escape`]): profile and suite names are file names,
//! and reasons quote whatever a guest printed.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::matrix::run::{CellResult, MatrixResult, Status};

/// The files a matrix writes into its output directory.
pub struct MatrixFiles {
    pub json: PathBuf,
    pub html: PathBuf,
}

pub fn write(out: &Path, result: &MatrixResult) -> anyhow::Result<MatrixFiles> {
    let files = MatrixFiles { json: out.join("matrix.json"), html: out.join("index.html") };
    fs_err::write(&files.json, serde_json::to_string_pretty(result)? + "\n")?;
    fs_err::write(&files.html, html(result))?;
    Ok(files)
}

/// Text made safe for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}\
th,td{border:1px solid #999;padding:.3em .6em;text-align:center}th.profile{text-align:left}\
td.passed{background:#8fd18f}td.failed{background:#f08a8a}td.skipped{background:#ddd}td.error{background:#e0a040}\
td a{color:#000}p.reason{font-size:small;margin:.2em 0}";

/// The report: a row per profile, a column per stack and suite; a cell links to its run's files.
pub fn html(result: &MatrixResult) -> String {
    let mut page = String::new();
    let passed = result.cells.iter().filter(|cell| cell.status == Status::Passed).count();
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>cxl-lab matrix</title><style>{STYLE}</style></head>\n<body>\n\
         <h1>cxl-lab matrix</h1>\n<p>{} cells ({} passed), {} at a time, {:.1} s</p>\n<table id=\"matrix\">\n<thead><tr><th rowspan=\"2\">profile</th>",
        result.cells.len(),
        passed,
        result.jobs,
        result.wall_seconds
    );
    for stack in &result.stacks {
        let _ = write!(page, "<th colspan=\"{}\">{}</th>", result.suites.len(), escape(stack));
    }
    page.push_str("</tr>\n<tr>");
    for _ in &result.stacks {
        for suite in &result.suites {
            let _ = write!(page, "<th>{}</th>", escape(suite));
        }
    }
    page.push_str("</tr></thead>\n<tbody>\n");
    for profile in &result.profiles {
        let _ = write!(page, "<tr><th class=\"profile\">{}</th>", escape(profile));
        for stack in &result.stacks {
            let cell = result.cell(profile, stack);
            for suite in &result.suites {
                page.push_str(&grid_cell(cell, suite));
            }
        }
        page.push_str("</tr>\n");
    }
    page.push_str("</tbody>\n</table>\n<h2>Cells</h2>\n<ul>\n");
    for cell in &result.cells {
        let reason = cell.reason.as_deref().map(|reason| format!(": {}", escape(reason))).unwrap_or_default();
        let links: Vec<String> = cell.files.iter().map(|file| format!("<a href=\"{}\">{}</a>", escape(&link(file)), escape(file))).collect();
        let _ = writeln!(
            page,
            "<li id=\"{}\">{}/{} ({}, {:.1} s){reason}<br>{}</li>",
            escape(&cell.dir),
            escape(&cell.profile),
            escape(&cell.stack),
            cell.status.name(),
            cell.seconds,
            links.join(" ")
        );
    }
    page.push_str("</ul>\n</body>\n</html>\n");
    page
}

/// One suite of one (profile, stack): coloured by its outcome, linking to the run's results (or,
/// for a cell that did not finish, its log).
fn grid_cell(cell: Option<&CellResult>, suite: &str) -> String {
    let Some(cell) = cell else { return "<td class=\"cell none\">-</td>".to_owned() };
    let status = cell.suites.iter().find(|each| each.suite == suite).map_or(Status::Error, |each| each.status);
    let target = ["results.json", "cell.log"].iter().map(|name| format!("{}/{name}", cell.dir)).find(|file| cell.files.contains(file)).unwrap_or_else(|| cell.dir.clone());
    let reason = cell.reason.as_deref().map(|reason| format!("<p class=\"reason\">{}</p>", escape(reason))).unwrap_or_default();
    format!(
        "<td class=\"cell {status}\" data-profile=\"{}\" data-stack=\"{}\" data-suite=\"{}\"><a href=\"{}\">{status}</a> <a href=\"#{}\">logs</a>{reason}</td>",
        escape(&cell.profile),
        escape(&cell.stack),
        escape(suite),
        escape(&link(&target)),
        escape(&cell.dir),
        status = status.name()
    )
}

/// A relative path as a URL path: each segment percent-encoded where a URL needs it.
fn link(path: &str) -> String {
    let mut url = String::new();
    for byte in path.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~/".contains(&byte) {
            url.push(byte as char);
        } else {
            let _ = write!(url, "%{byte:02X}");
        }
    }
    url
}

/// The terminal's summary: a header and a row per cell, columns padded to fit.
pub fn summary_table(result: &MatrixResult) -> Vec<String> {
    let mut header = vec!["profile".to_owned(), "stack".to_owned()];
    header.extend(result.suites.iter().cloned());
    header.extend(["cell".to_owned(), "seconds".to_owned()]);
    let mut rows = vec![header];
    for cell in &result.cells {
        let mut row = vec![cell.profile.clone(), cell.stack.clone()];
        row.extend(result.suites.iter().map(|suite| cell.suites.iter().find(|each| &each.suite == suite).map_or("error", |each| each.status.name()).to_owned()));
        row.extend([cell.status.name().to_owned(), format!("{:.1}", cell.seconds)]);
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len()).map(|column| rows.iter().map(|row| row[column].len()).max().unwrap_or(0)).collect();
    rows.iter()
        .map(|row| row.iter().zip(&widths).map(|(text, width)| format!("{text:<width$}")).collect::<Vec<_>>().join("  ").trim_end().to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::run::SuiteCell;

    fn cell(profile: &str, status: Status, suites: &[(&str, Status)], reason: Option<&str>) -> CellResult {
        CellResult {
            profile: profile.to_owned(),
            stack: "distro".to_owned(),
            lab: format!("mx-{profile}-distro"),
            status,
            reason: reason.map(str::to_owned),
            seconds: 12.34,
            dir: format!("{profile}-distro"),
            suites: suites.iter().map(|(suite, status)| SuiteCell { suite: suite.to_string(), status: *status }).collect(),
            files: vec![format!("{profile}-distro/cell.log"), format!("{profile}-distro/results.json")],
        }
    }

    fn result() -> MatrixResult {
        MatrixResult {
            profiles: vec!["seed".into(), "<b>".into()],
            stacks: vec!["distro".into()],
            suites: vec!["smoke".into(), "region".into()],
            jobs: 2,
            wall_seconds: 60.0,
            cells: vec![
                cell("seed", Status::Passed, &[("smoke", Status::Passed), ("region", Status::Skipped)], None),
                cell("<b>", Status::Error, &[("smoke", Status::Error), ("region", Status::Error)], Some("QEMU of `host0` ended & <gone>")),
            ],
        }
    }

    #[test]
    fn the_grid_has_a_cell_per_profile_stack_and_suite_and_escapes_everything() {
        let page = html(&result());
        assert_eq!(page.matches("<td class=\"cell ").count(), 4, "{page}");
        assert!(page.contains("<td class=\"cell skipped\" data-profile=\"seed\" data-stack=\"distro\" data-suite=\"region\"><a href=\"seed-distro/results.json\">skipped</a>"), "{page}");
        assert!(!page.contains("<b>"), "an unescaped name: {page}");
        assert!(page.contains("&lt;b&gt;") && page.contains("ended &amp; &lt;gone&gt;"), "{page}");
        assert!(page.contains("href=\"%3Cb%3E-distro/results.json\""), "{page}");
    }

    #[test]
    fn the_summary_is_a_padded_table() {
        let table = summary_table(&result());
        assert_eq!(table[0], "profile  stack   smoke   region   cell    seconds");
        assert_eq!(table[1], "seed     distro  passed  skipped  passed  12.3");
        assert_eq!(table[2], "<b>      distro  error   error    error   12.3");
    }
}
