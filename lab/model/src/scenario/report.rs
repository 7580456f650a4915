//! A scenario's outcomes for people: a table, and an SVG bar chart of the bytes each mechanism
//! exposes beyond the policy.

use std::fmt::Write as _;

use super::eval::Outcome;
use super::Scenario;
use crate::size::{GIB, KIB, MIB};

/// One line per mechanism, columns aligned.
pub fn table(scenario: &Scenario, outcomes: &[Outcome]) -> String {
    let mut text = format!(
        "scenario {}: {} requesters, {} buffers, {} steps\n",
        scenario.name,
        scenario.requesters.len(),
        scenario.buffers.len(),
        scenario.steps.len()
    );
    let _ = writeln!(
        text,
        "{:<13} {:>9} {:>8} {:>13} {:>8} {:>13} {:>13} {:>20} {:>8} {:>9}",
        "mechanism", "expresses", "widened", "over-exposed", "entries", "wrongly-allow", "wrongly-deny", "central actions", "accesses", "ns/check"
    );
    for outcome in outcomes {
        let central = match &outcome.central_actor {
            Some(actor) => format!("{} ({actor})", outcome.central_actions),
            None => outcome.central_actions.to_string(),
        };
        let per_check = outcome.check_nanos / (outcome.accesses_checked.max(1) as u128);
        let _ = writeln!(
            text,
            "{:<13} {:>9} {:>8} {:>13} {:>8} {:>13} {:>13} {:>20} {:>8} {:>9}",
            outcome.mechanism,
            if outcome.expresses_policy { "yes" } else { "no" },
            outcome.widened_grants,
            human(outcome.bytes_over_exposed),
            outcome.table_entries,
            outcome.forbidden_allowed,
            outcome.permitted_denied,
            central,
            outcome.accesses_checked,
            per_check,
        );
    }
    text.push_str("wrongly-allow: forbidden accesses allowed; wrongly-deny: permitted accesses denied\n");
    text
}

const BAR_HEIGHT: u64 = 28;
const LABEL_WIDTH: u64 = 130;
const CHART_WIDTH: u64 = 520;

/// Bars on a log scale (bytes + 1), each labelled with its size: exposure spans 0 to gigabytes.
pub fn chart_svg(scenario: &Scenario, outcomes: &[Outcome]) -> String {
    let most = outcomes.iter().map(|outcome| outcome.bytes_over_exposed).max().unwrap_or(0);
    let scale = ((most + 1) as f64).log10().max(1.0);
    let height = 50 + BAR_HEIGHT * outcomes.len() as u64;
    let width = LABEL_WIDTH + CHART_WIDTH + 110;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"13\">\n"
    );
    let title = escape(&format!("{}: bytes exposed beyond the policy (log scale)", scenario.name));
    let _ = writeln!(svg, "  <text x=\"10\" y=\"22\" font-weight=\"bold\">{title}</text>");
    for (index, outcome) in outcomes.iter().enumerate() {
        let y = 36 + BAR_HEIGHT * index as u64;
        let bar = (((outcome.bytes_over_exposed + 1) as f64).log10() / scale * CHART_WIDTH as f64).round() as u64;
        let label_y = y + BAR_HEIGHT / 2 + 4;
        let _ = writeln!(svg, "  <text x=\"10\" y=\"{label_y}\">{}</text>", escape(outcome.mechanism));
        let _ = writeln!(
            svg,
            "  <rect x=\"{LABEL_WIDTH}\" y=\"{}\" width=\"{bar}\" height=\"{}\" fill=\"#4a78b5\"/>",
            y + 3,
            BAR_HEIGHT - 6
        );
        let value_x = LABEL_WIDTH + bar + 6;
        let _ = writeln!(svg, "  <text x=\"{value_x}\" y=\"{label_y}\">{}</text>", human(outcome.bytes_over_exposed));
    }
    svg.push_str("</svg>\n");
    svg
}

/// Bytes with a binary unit and one decimal: `7.8 GiB`, `4.0 KiB`, `12 B`.
pub fn human(bytes: u64) -> String {
    let (unit, name) = match bytes {
        _ if bytes >= GIB => (GIB, "GiB"),
        _ if bytes >= MIB => (MIB, "MiB"),
        _ if bytes >= KIB => (KIB, "KiB"),
        _ => return format!("{bytes} B"),
    };
    format!("{:.1} {name}", bytes as f64 / unit as f64)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
