//! `lab matrix --emit github`: the matrix as a GitHub Actions workflow. A nightly schedule, one
//! job per cell (a matrix strategy over the cells' profile and stack), each in a `debian:bookworm`
//! container where `cargo xtask host setup` works as on a lab machine; the artifact cache keyed
//! on the stack's lock file, each cell's results uploaded as an artifact.
//!
//! A job runs its cell through `lab matrix` itself, so its artifact has the same layout
//! (`matrix.json`, `index.html`, the cell's directory) as a local run.

use std::fmt::Write as _;

use crate::matrix::plan::MatrixPlan;

/// The workflow's YAML. Names are written as JSON strings, which YAML reads as they are.
pub fn workflow(plan: &MatrixPlan, source: &str) -> String {
    let quoted = |text: &str| serde_json::to_string(text).expect("a string serializes");
    let mut include = String::new();
    for cell in &plan.cells {
        let _ = write!(include, "\n          - profile: {}\n            stack: {}", quoted(&cell.profile), quoted(cell.stack.name()));
    }
    // The job's own limit: the cell's, plus setup, the build of a cold cache and the upload.
    let timeout_minutes = plan.cell_timeout.as_secs().div_ceil(60) + 120;
    let suites = quoted(&plan.suites.join(","));
    let source = quoted(source);
    format!(
        r#"# Written by `cargo xtask lab matrix --emit github` from {source}: regenerate it, do not edit it.
name: cxl-lab matrix
on:
  schedule:
    - cron: "17 2 * * *"
  workflow_dispatch:
permissions:
  contents: read
jobs:
  cell:
    name: ${{{{ matrix.profile }}}} on ${{{{ matrix.stack }}}}
    runs-on: ubuntu-latest
    timeout-minutes: {timeout_minutes}
    container:
      image: debian:bookworm
      # QEMU wants /dev/kvm when the runner has it; debootstrap mounts in its namespaces.
      options: --privileged
    strategy:
      fail-fast: false
      matrix:
        include:{include}
    env:
      CARGO_TERM_COLOR: never
    steps:
      - name: What checks out and builds the tool
        run: |
          apt-get update
          apt-get install -y --no-install-recommends ca-certificates curl git build-essential pkg-config
      - uses: actions/checkout@v4
      - name: Rust
        run: |
          curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
          echo "$HOME/.cargo/bin" >> "$GITHUB_PATH"
      - name: Artifact cache, keyed on the stack's lock file
        uses: actions/cache@v4
        with:
          path: |
            ~/.cache/cxl-lab
            ~/.cargo/registry
            target
          key: cxl-lab-${{{{ matrix.stack }}}}-${{{{ hashFiles(format('images/{{0}}.lock', matrix.stack), 'Cargo.lock') }}}}
          restore-keys: cxl-lab-${{{{ matrix.stack }}}}-
      - name: Host programs
        run: cargo xtask host setup --stack "${{{{ matrix.stack }}}}"
      - name: Cell
        run: >-
          cargo xtask lab --lab ci matrix --profile "${{{{ matrix.profile }}}}" --stack "${{{{ matrix.stack }}}}"
          --suite {suites} --jobs 1 --out matrix-results
      - name: Results
        if: always()
        uses: actions/upload-artifact@v4
        with:
          name: matrix-${{{{ matrix.profile }}}}-${{{{ matrix.stack }}}}
          path: matrix-results/
          if-no-files-found: warn
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::plan::Cell;
    use crate::stack::StackKind;
    use std::time::Duration;

    #[test]
    fn a_job_per_cell_with_the_matrix_suites() {
        let cell = |profile: &str, stack| Cell { profile: profile.to_owned(), stack, lab: String::new(), memory: 0 };
        let plan = MatrixPlan {
            profiles: vec!["seed".into(), "dcd".into()],
            stacks: vec![StackKind::Distro, StackKind::Source],
            suites: vec!["smoke".into(), "topology".into()],
            cells: vec![cell("seed", StackKind::Distro), cell("dcd", StackKind::Source)],
            cell_timeout: Duration::from_secs(1800),
        };
        let yaml = workflow(&plan, "matrices/nightly.yaml");
        assert!(yaml.contains("        include:\n          - profile: \"seed\"\n            stack: \"distro\"\n          - profile: \"dcd\"\n            stack: \"source\"\n    env:"), "{yaml}");
        assert!(yaml.contains("--suite \"smoke,topology\" --jobs 1"), "{yaml}");
        assert!(yaml.contains("timeout-minutes: 150\n"), "{yaml}");
        assert!(yaml.contains("name: ${{ matrix.profile }} on ${{ matrix.stack }}"), "{yaml}");
        assert!(yaml.contains("hashFiles(format('images/{0}.lock', matrix.stack), 'Cargo.lock')"), "{yaml}");
    }
}
