//! Profile errors: each names the file, line, column and field of the offending value.

use std::fmt;

use serde::de::DeserializeOwned;
use serde_saphyr::Spanned;

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

/// Parses one YAML file into its schema type; a syntax or type error is one error at its line.
pub fn parse_yaml<T: DeserializeOwned>(file: &str, source: &str) -> Result<T, ProfileErrors> {
    serde_saphyr::from_str(source).map_err(|error| {
        let (line, column) = yaml_error_location(&error);
        let message = yaml_error_message(&error.to_string());
        ProfileErrors(vec![ProfileError { file: file.to_owned(), line, column, field: "(yaml)".to_owned(), message }])
    })
}

/// serde-saphyr renders a snippet under its message and repeats the position before or after
/// it; the message itself is what we quote, after our own `file:line:column` (profiles,
/// scenarios, and through `cxl_lab_core::yaml` recipes and suites).
pub fn yaml_error_message(message: &str) -> String {
    let line = message.lines().next().unwrap_or(message).trim();
    let line = line.strip_prefix("error: ").unwrap_or(line);
    let line = match line.strip_prefix("line ").and_then(|rest| rest.split_once(": ")) {
        Some((position, rest)) if position.contains(" column ") => rest,
        _ => line,
    };
    let line = match line.rsplit_once(" at line ") {
        Some((message, position)) if position.contains(", column ") => message,
        _ => line,
    };
    // A hint at the parser's options is no use to someone writing a file by hand.
    line.trim_end_matches(", set DuplicateKeyPolicy in Options if acceptable").to_owned()
}

/// The line and column of a serde-saphyr error (1, 1 when it has none).
pub fn yaml_error_location(error: &serde_saphyr::Error) -> (u64, u64) {
    error.location().map(|at| (at.line(), at.column())).unwrap_or((1, 1))
}

/// The errors found in one file, each at the line and column of the value that broke a rule.
pub struct ErrorSink<'f> {
    file: &'f str,
    errors: Vec<ProfileError>,
}

impl<'f> ErrorSink<'f> {
    pub fn new(file: &'f str) -> ErrorSink<'f> {
        ErrorSink { file, errors: Vec::new() }
    }

    pub fn at<T>(&mut self, at: &Spanned<T>, field: &str, message: String) {
        let (line, column) = (at.referenced.line(), at.referenced.column());
        self.errors.push(ProfileError { file: self.file.to_owned(), line, column, field: field.to_owned(), message });
    }

    /// An error about something the file does not spell out (a missing key, the file name).
    pub fn at_start(&mut self, field: &str, message: String) {
        self.errors.push(ProfileError { file: self.file.to_owned(), line: 1, column: 1, field: field.to_owned(), message });
    }

    pub fn count(&self) -> usize {
        self.errors.len()
    }

    /// `value` when nothing was wrong, else every error in file order.
    pub fn finish<T>(mut self, value: T) -> Result<T, ProfileErrors> {
        if self.errors.is_empty() {
            return Ok(value);
        }
        self.errors.sort_by_key(|error| (error.line, error.column));
        Err(ProfileErrors(self.errors))
    }
}
