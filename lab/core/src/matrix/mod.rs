//! `lab matrix`: suites over many profiles and stacks at once (`docs/matrix.md`).
//!
//! - [`plan`] a matrix file or the command line's lists → cells (one boot per profile and stack,
//!   running every suite), checked before any starts; how many run side by side;
//! - [`run`] each cell as its own `lab run` process, in parallel, each bounded by a timeout; a
//!   cell that crashes, hangs or loses its QEMU is an error with its logs, the others go on;
//! - [`report`] `matrix.json`, the HTML grid, the terminal's summary table;
//! - [`github`] the matrix as a GitHub Actions workflow (`--emit github`).
//!
//! Above [`crate::suite`]: a matrix runs suites, nothing uses a matrix.

pub mod github;
pub mod plan;
pub mod report;
pub mod run;
