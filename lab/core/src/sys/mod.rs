//! The operating system underneath everything: running external programs ([`runner`]), processes
//! and signals ([`process`]), and replacing files atomically ([`atomic_file`]).

pub mod atomic_file;
pub mod process;
pub mod runner;
