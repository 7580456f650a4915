//! Profile errors: each names the file, line, column and field of the offending value.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileError {
    pub file: String,
    pub line: u64,
    pub column: u64,
    /// The path of the field, e.g. `host_bridges[0].root_ports[1].port`.
    pub field: String,
    pub message: String,
}

impl ProfileError {
    /// An error about a value a later stage found wrong, at where it was written.
    pub fn at(file: &str, at: &crate::topology::SourceAt, message: String) -> ProfileError {
        ProfileError { file: file.to_owned(), line: at.line, column: at.column, field: at.field.clone(), message }
    }
}

impl fmt::Display for ProfileError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}:{}:{}: {}: {}", self.file, self.line, self.column, self.field, self.message)
    }
}

impl std::error::Error for ProfileError {}

/// Every rule a profile broke, in file order, one per line when shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileErrors(pub Vec<ProfileError>);

impl fmt::Display for ProfileErrors {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        formatter.write_str(&lines.join("\n"))
    }
}

impl std::error::Error for ProfileErrors {}
