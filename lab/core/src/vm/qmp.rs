//! A QMP client over the machine's unix socket, built on the `qapi` crate's types and read
//! tolerantly.
//!
//! Why not `qapi::Qmp` as it is: its reader decodes every line into `qapi_qmp::QmpMessage`, whose
//! events are the closed enum generated from the QEMU 9.1 schema bundled in `qapi-qmp`. Any event
//! that schema does not know (QEMU 10.0 already adds `NETDEV_VHOST_USER_CONNECTED` and
//! `NETDEV_VHOST_USER_DISCONNECTED`; the source stack's 11.1 will add more), or a new enum value
//! inside a known event, fails deserialisation and breaks the session, including the handshake
//! when an event arrives during it. Generating the types from the schema of the QEMU in use would
//! need that QEMU's `qapi/*.json` at build time, which a distro QEMU does not ship.
//!
//! So this client keeps `qapi`'s command types (`qapi::Command`: the name, the argument struct
//! and the typed return value) and its error classes, but reads each line as plain JSON first:
//! replies are matched to their command by `id`, events are kept raw (name, data, timestamp) and
//! never decoded against the bundled schema, and the greeting is read field by field. Typed
//! helpers cover what the tool itself uses; [`QmpClient::execute_raw`] passes any command through
//! for `lab qmp`. A typed return that does not match the running QEMU is reported with the raw
//! reply rather than panicking.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::qemu::QemuVersion;

/// How long one command may take before the client gives up on it.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("cannot connect to QMP socket {socket}: {source}")]
    Connect { socket: PathBuf, source: std::io::Error },
    #[error("QMP socket {socket}: {source}")]
    Io { socket: PathBuf, source: std::io::Error },
    #[error("QMP socket {socket} closed by QEMU while waiting for the reply to `{command}`")]
    Closed { socket: PathBuf, command: String },
    #[error("QMP socket {socket}: no reply to `{command}` within {timeout:?}")]
    Timeout { socket: PathBuf, command: String, timeout: Duration },
    #[error("QMP socket {socket}: unexpected message {message}")]
    Protocol { socket: PathBuf, message: String },
    /// QEMU refused the command: its own error class and description.
    #[error("QEMU refused `{command}`: {class}: {desc}")]
    Refused { command: String, class: String, desc: String },
    #[error("QEMU's reply to `{command}` does not match the expected type ({detail}): {reply}")]
    UnexpectedReply { command: String, detail: String, reply: String },
}

/// What QEMU says about itself in the greeting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QmpGreeting {
    pub version: QemuVersion,
    pub package: String,
    pub capabilities: Vec<String>,
}

/// An asynchronous event, kept as QEMU sent it.
#[derive(Clone, Debug, PartialEq)]
pub struct QmpEvent {
    pub name: String,
    pub data: Value,
    pub timestamp: Value,
}

/// Whether the VM runs, as `query-status` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmRunStatus {
    pub running: bool,
    /// QEMU's `RunState` name (`running`, `paused`, `prelaunch`, `shutdown`...), kept as a string
    /// so states newer than the bundled schema still read.
    pub status: String,
}

/// One QMP session: greeting read, capabilities negotiated, ready for commands.
pub struct QmpClient {
    socket: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    greeting: QmpGreeting,
    events: Vec<QmpEvent>,
    next_id: u64,
    command_timeout: Duration,
}

impl QmpClient {
    /// Connects, reads the greeting and leaves capabilities negotiation mode.
    pub fn connect(socket: &Path) -> Result<QmpClient, QmpError> {
        let stream = UnixStream::connect(socket)
            .map_err(|source| QmpError::Connect { socket: socket.to_path_buf(), source })?;
        let writer = stream.try_clone().map_err(|source| QmpError::Io { socket: socket.to_path_buf(), source })?;
        let mut client = QmpClient {
            socket: socket.to_path_buf(),
            reader: BufReader::new(stream),
            writer,
            greeting: QmpGreeting { version: QemuVersion::new(0, 0, 0), package: String::new(), capabilities: Vec::new() },
            events: Vec::new(),
            next_id: 1,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
        };
        client.greeting = client.read_greeting()?;
        client.execute_raw("qmp_capabilities", None)?;
        Ok(client)
    }

    pub fn greeting(&self) -> &QmpGreeting {
        &self.greeting
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn set_command_timeout(&mut self, timeout: Duration) {
        self.command_timeout = timeout;
    }

    /// Runs any command with optional arguments and returns QEMU's `return` value as JSON, or
    /// QEMU's error as [`QmpError::Refused`].
    pub fn execute_raw(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut request = json!({ "execute": command, "id": id });
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        self.send_line(&request)?;
        self.read_reply(command, id)
    }

    /// Runs a command typed by the `qapi` crate and decodes its return value.
    pub fn execute<C: qapi::Command>(&mut self, command: &C) -> Result<C::Ok, QmpError> {
        let arguments = serde_json::to_value(command).map_err(|error| QmpError::UnexpectedReply {
            command: C::NAME.to_owned(),
            detail: format!("arguments do not serialise: {error}"),
            reply: String::new(),
        })?;
        // Commands without arguments serialise to `{}` or `null`; QEMU takes either as absent.
        let arguments = match arguments {
            Value::Object(ref map) if map.is_empty() => None,
            Value::Null => None,
            other => Some(other),
        };
        let reply = self.execute_raw(C::NAME, arguments)?;
        serde_json::from_value(reply.clone()).map_err(|error| QmpError::UnexpectedReply {
            command: C::NAME.to_owned(),
            detail: error.to_string(),
            reply: reply.to_string(),
        })
    }

    pub fn query_status(&mut self) -> Result<VmRunStatus, QmpError> {
        // Read through `execute_raw` rather than `qapi_qmp::StatusInfo`: `RunState` gains values
        // between QEMU releases and the status is only shown and compared, never matched.
        let reply = self.execute_raw("query-status", None)?;
        let running = reply.get("running").and_then(Value::as_bool);
        let status = reply.get("status").and_then(Value::as_str);
        match (running, status) {
            (Some(running), Some(status)) => Ok(VmRunStatus { running, status: status.to_owned() }),
            _ => Err(QmpError::UnexpectedReply {
                command: "query-status".to_owned(),
                detail: "missing `running` or `status`".to_owned(),
                reply: reply.to_string(),
            }),
        }
    }

    /// The QEMU version.
    pub fn query_version(&mut self) -> Result<QemuVersion, QmpError> {
        let info = self.execute(&qapi::qmp::query_version {})?;
        let triple = info.qemu;
        Ok(QemuVersion::new(triple.major as u32, triple.minor as u32, triple.micro as u32))
    }

    /// Starts a machine created paused (`-S`).
    pub fn cont(&mut self) -> Result<(), QmpError> {
        self.execute(&qapi::qmp::cont {}).map(drop)
    }

    /// Asks the guest to power down (ACPI power button); the guest decides when.
    pub fn system_powerdown(&mut self) -> Result<(), QmpError> {
        self.execute(&qapi::qmp::system_powerdown {}).map(drop)
    }

    /// Ends QEMU at once. QEMU replies and then closes the socket, so a close right after the
    /// request counts as success.
    pub fn quit(&mut self) -> Result<(), QmpError> {
        match self.execute(&qapi::qmp::quit {}) {
            Ok(_) | Err(QmpError::Closed { .. }) => Ok(()),
            Err(QmpError::Io { source, .. }) if source.kind() == std::io::ErrorKind::ConnectionReset => Ok(()),
            Err(other) => Err(other),
        }
    }

    /// Events received so far, oldest first; the buffer is emptied.
    pub fn take_events(&mut self) -> Vec<QmpEvent> {
        std::mem::take(&mut self.events)
    }

    fn read_greeting(&mut self) -> Result<QmpGreeting, QmpError> {
        let message = self.read_message("greeting", DEFAULT_COMMAND_TIMEOUT)?;
        let qmp = message.get("QMP").ok_or_else(|| self.protocol_error(&message))?;
        let version = &qmp["version"]["qemu"];
        let number = |field: &str| version.get(field).and_then(Value::as_u64).map(|value| value as u32);
        let (Some(major), Some(minor), Some(micro)) = (number("major"), number("minor"), number("micro")) else {
            return Err(self.protocol_error(&message));
        };
        let package = qmp["version"]["package"].as_str().unwrap_or_default().to_owned();
        let capabilities = qmp["capabilities"]
            .as_array()
            .map(|list| list.iter().filter_map(|item| item.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        Ok(QmpGreeting { version: QemuVersion::new(major, minor, micro), package, capabilities })
    }

    fn read_reply(&mut self, command: &str, id: u64) -> Result<Value, QmpError> {
        loop {
            let message = self.read_message(command, self.command_timeout)?;
            if let Some(event_name) = message.get("event").and_then(Value::as_str) {
                self.events.push(QmpEvent {
                    name: event_name.to_owned(),
                    data: message.get("data").cloned().unwrap_or(Value::Null),
                    timestamp: message.get("timestamp").cloned().unwrap_or(Value::Null),
                });
                continue;
            }
            // A reply without our id belongs to no command of this session (QEMU echoes the id
            // of every command); skip it rather than hand it to the wrong caller.
            if message.get("id").and_then(Value::as_u64) != Some(id) {
                continue;
            }
            if let Some(value) = message.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = message.get("error") {
                return Err(QmpError::Refused {
                    command: command.to_owned(),
                    class: error["class"].as_str().unwrap_or("unknown").to_owned(),
                    desc: error["desc"].as_str().unwrap_or("").to_owned(),
                });
            }
            return Err(self.protocol_error(&message));
        }
    }

    fn read_message(&mut self, waiting_for: &str, timeout: Duration) -> Result<Value, QmpError> {
        self.reader
            .get_ref()
            .set_read_timeout(Some(timeout))
            .map_err(|source| QmpError::Io { socket: self.socket.clone(), source })?;
        let mut line = String::new();
        loop {
            line.clear();
            match self.reader.read_line(&mut line) {
                Ok(0) => return Err(QmpError::Closed { socket: self.socket.clone(), command: waiting_for.to_owned() }),
                Ok(_) if line.trim().is_empty() => continue,
                Ok(_) => {
                    return serde_json::from_str(&line).map_err(|_| QmpError::Protocol {
                        socket: self.socket.clone(),
                        message: line.trim_end().to_owned(),
                    })
                }
                Err(error) if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    return Err(QmpError::Timeout { socket: self.socket.clone(), command: waiting_for.to_owned(), timeout })
                }
                Err(source) => return Err(QmpError::Io { socket: self.socket.clone(), source }),
            }
        }
    }

    fn send_line(&mut self, request: &Value) -> Result<(), QmpError> {
        let mut line = request.to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes()).map_err(|source| QmpError::Io { socket: self.socket.clone(), source })
    }

    fn protocol_error(&self, message: &Value) -> QmpError {
        QmpError::Protocol { socket: self.socket.clone(), message: message.to_string() }
    }
}

/// Parses the JSON argument of `lab qmp COMMAND [JSON]`: absent means no arguments; anything
/// given must be a JSON object, as QMP requires.
pub fn parse_command_arguments(text: Option<&str>) -> Result<Option<Value>, String> {
    let Some(text) = text else { return Ok(None) };
    let value: Value = serde_json::from_str(text).map_err(|error| format!("arguments are not JSON: {error}"))?;
    if !value.is_object() {
        return Err(format!("arguments must be a JSON object, got {value}"));
    }
    Ok(Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_must_be_a_json_object() {
        assert_eq!(parse_command_arguments(None), Ok(None));
        assert_eq!(parse_command_arguments(Some(r#"{"a":1}"#)), Ok(Some(json!({"a": 1}))));
        assert!(parse_command_arguments(Some("[1]")).unwrap_err().contains("JSON object"));
        assert!(parse_command_arguments(Some("{nope")).unwrap_err().contains("not JSON"));
    }
}
