//! A client for the QEMU guest agent (qemu-guest-agent in the guest) over the machine's `qga.sock`.
//!
//! The agent speaks QMP-style JSON lines through a virtio-serial port. Unlike QMP it has no
//! greeting, and the channel outlives our connection: requests written while the guest has not
//! opened the port wait in the socket and are answered later, and a previous client may have left
//! half a request behind. So every session starts (and restarts after a timeout) with a raw 0xFF
//! byte, which resets the agent's parser, and `guest-sync-delimited` with a fresh id; the agent
//! answers with 0xFF before the reply, and everything up to the reply carrying our id is stale.
//!
//! The few messages the tool uses are typed here by hand rather than through `qapi-qga`: the agent
//! runs inside the guest and its version follows the guest's distribution, not the host's QEMU.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

/// How long a plain agent command may take.
pub const AGENT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How much `lab cp` moves per agent request (the agent's limit is far higher; this keeps each
/// JSON line a modest size).
const FILE_CHUNK_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot connect to the guest agent socket {socket}: {source}")]
    Connect { socket: PathBuf, source: std::io::Error },
    #[error("guest agent socket {socket}: {source}")]
    Io { socket: PathBuf, source: std::io::Error },
    #[error("guest agent socket {socket} closed while waiting for `{command}`")]
    Closed { socket: PathBuf, command: String },
    #[error("the guest agent did not answer `{command}` in time")]
    Timeout { command: String },
    #[error("the guest agent refused `{command}`: {class}: {desc}")]
    Refused { command: String, class: String, desc: String },
    #[error("unexpected reply from the guest agent to `{command}`: {reply}")]
    UnexpectedReply { command: String, reply: String },
    #[error("guest command `{command}` still running after {timeout:?}; killed it")]
    ExecTimeout { command: String, timeout: Duration },
}

/// What a command run in the guest left behind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuestExecOutput {
    /// The exit code, absent when the command was ended by a signal.
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The agent caps captured output (16 MiB); set when it cut some off.
    pub output_truncated: bool,
}

/// One connection to a guest agent.
pub struct GuestAgent {
    socket: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_sync_id: i64,
    /// Set when a reply may still be in flight (a timeout), so the next command resyncs first.
    needs_sync: bool,
}

impl GuestAgent {
    /// Connects and synchronises; fails if the agent does not answer within `timeout`.
    pub fn connect(socket: &Path, timeout: Duration) -> Result<GuestAgent, AgentError> {
        let stream =
            UnixStream::connect(socket).map_err(|source| AgentError::Connect { socket: socket.to_path_buf(), source })?;
        let mut agent = GuestAgent::from_stream(socket, stream)?;
        agent.sync(timeout)?;
        Ok(agent)
    }

    /// Waits until the guest agent answers `guest-ping`, calling `check_alive` between attempts so
    /// the caller can stop waiting when QEMU has died (its error is returned as is).
    pub fn wait_until_ready<E: From<AgentError>>(
        socket: &Path,
        timeout: Duration,
        mut check_alive: impl FnMut() -> Result<(), E>,
    ) -> Result<GuestAgent, E> {
        let deadline = Instant::now() + timeout;
        let mut last_error = None;
        let mut connection: Option<GuestAgent> = None;
        while Instant::now() < deadline {
            check_alive()?;
            match connection.take() {
                None => match UnixStream::connect(socket) {
                    // Keep one connection across attempts: the agent answers queued syncs in
                    // order once it starts, and reconnecting would only add stale requests.
                    Ok(stream) => connection = Some(GuestAgent::from_stream(socket, stream)?),
                    Err(source) => {
                        last_error = Some(AgentError::Connect { socket: socket.to_path_buf(), source });
                        std::thread::sleep(Duration::from_millis(100));
                    }
                },
                Some(mut agent) => match agent.sync(Duration::from_secs(1)).and_then(|()| agent.ping()) {
                    Ok(()) => return Ok(agent),
                    Err(error @ (AgentError::Timeout { .. } | AgentError::UnexpectedReply { .. })) => {
                        last_error = Some(error);
                        connection = Some(agent);
                    }
                    Err(error) => {
                        last_error = Some(error);
                        std::thread::sleep(Duration::from_millis(200));
                    }
                },
            }
        }
        check_alive()?;
        Err(E::from(last_error.unwrap_or(AgentError::Timeout { command: "guest-ping".to_owned() })))
    }

    fn from_stream(socket: &Path, stream: UnixStream) -> Result<GuestAgent, AgentError> {
        let writer = stream.try_clone().map_err(|source| AgentError::Io { socket: socket.to_path_buf(), source })?;
        // Seed sync ids from the clock so a reply left over from an earlier session never matches.
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Ok(GuestAgent {
            socket: socket.to_path_buf(),
            reader: BufReader::new(stream),
            writer,
            next_sync_id: (seed.as_millis() % 1_000_000_000) as i64,
            needs_sync: true,
        })
    }

    /// Resets the agent's parser and discards everything up to the reply to a fresh sync id.
    pub fn sync(&mut self, timeout: Duration) -> Result<(), AgentError> {
        let id = self.next_sync_id;
        self.next_sync_id += 1;
        let mut request = vec![0xFF];
        request.extend_from_slice(json!({ "execute": "guest-sync-delimited", "arguments": { "id": id } }).to_string().as_bytes());
        request.push(b'\n');
        self.write_bytes(&request)?;
        let deadline = Instant::now() + timeout;
        loop {
            // The reply to a delimited sync follows a 0xFF byte; anything before it is stale.
            self.skip_until_delimiter(deadline)?;
            let message = self.read_message("guest-sync-delimited", deadline)?;
            if message.get("return").and_then(Value::as_i64) == Some(id) {
                self.needs_sync = false;
                return Ok(());
            }
        }
    }

    pub fn ping(&mut self) -> Result<(), AgentError> {
        self.execute("guest-ping", None, AGENT_COMMAND_TIMEOUT).map(drop)
    }

    /// Runs one agent command and returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>, timeout: Duration) -> Result<Value, AgentError> {
        if self.needs_sync {
            self.sync(timeout)?;
        }
        let mut request = json!({ "execute": command });
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        let mut line = request.to_string().into_bytes();
        line.push(b'\n');
        self.write_bytes(&line)?;
        let deadline = Instant::now() + timeout;
        let message = match self.read_message(command, deadline) {
            Ok(message) => message,
            Err(error) => {
                self.needs_sync = true;
                return Err(error);
            }
        };
        if let Some(value) = message.get("return") {
            return Ok(value.clone());
        }
        if let Some(error) = message.get("error") {
            return Err(AgentError::Refused {
                command: command.to_owned(),
                class: error["class"].as_str().unwrap_or("unknown").to_owned(),
                desc: error["desc"].as_str().unwrap_or("").to_owned(),
            });
        }
        self.needs_sync = true;
        Err(AgentError::UnexpectedReply { command: command.to_owned(), reply: message.to_string() })
    }

    /// Runs `argv` in the guest (the agent searches `PATH`), waits up to `timeout` and returns its
    /// exit status and output. On timeout the guest process is killed.
    pub fn exec(&mut self, argv: &[String], stdin: Option<&[u8]>, timeout: Duration) -> Result<GuestExecOutput, AgentError> {
        let (program, arguments) = argv.split_first().ok_or_else(|| AgentError::UnexpectedReply {
            command: "guest-exec".to_owned(),
            reply: "no command given".to_owned(),
        })?;
        let mut request = json!({ "path": program, "arg": arguments, "capture-output": true });
        if let Some(input) = stdin {
            request["input-data"] = json!(base64::engine::general_purpose::STANDARD.encode(input));
        }
        let started = self.execute("guest-exec", Some(request), AGENT_COMMAND_TIMEOUT)?;
        let guest_pid = started["pid"].as_i64().ok_or_else(|| AgentError::UnexpectedReply {
            command: "guest-exec".to_owned(),
            reply: started.to_string(),
        })?;
        let deadline = Instant::now() + timeout;
        let mut poll_interval = Duration::from_millis(20);
        loop {
            let status = self.execute("guest-exec-status", Some(json!({ "pid": guest_pid })), AGENT_COMMAND_TIMEOUT)?;
            if status["exited"].as_bool() == Some(true) {
                return Ok(GuestExecOutput {
                    exit_code: status["exitcode"].as_i64().map(|code| code as i32),
                    signal: status["signal"].as_i64().map(|signal| signal as i32),
                    stdout: decode_base64_field(&status, "out-data")?,
                    stderr: decode_base64_field(&status, "err-data")?,
                    output_truncated: status["out-truncated"].as_bool().unwrap_or(false)
                        || status["err-truncated"].as_bool().unwrap_or(false),
                });
            }
            if Instant::now() >= deadline {
                // The agent has no command to kill what it started, so ask the guest's own kill.
                let _ = self.execute(
                    "guest-exec",
                    Some(json!({ "path": "kill", "arg": ["-9", guest_pid.to_string()], "capture-output": false })),
                    AGENT_COMMAND_TIMEOUT,
                );
                return Err(AgentError::ExecTimeout { command: argv.join(" "), timeout });
            }
            std::thread::sleep(poll_interval);
            poll_interval = (poll_interval * 2).min(Duration::from_millis(250));
        }
    }

    /// Reads a whole file from the guest.
    pub fn read_file(&mut self, guest_path: &str) -> Result<Vec<u8>, AgentError> {
        let handle = self.open_file(guest_path, "r")?;
        let mut contents = Vec::new();
        let result = loop {
            let chunk = match self.execute(
                "guest-file-read",
                Some(json!({ "handle": handle, "count": FILE_CHUNK_BYTES })),
                AGENT_COMMAND_TIMEOUT,
            ) {
                Ok(chunk) => chunk,
                Err(error) => break Err(error),
            };
            match decode_base64_field(&chunk, "buf-b64") {
                Ok(bytes) => contents.extend_from_slice(&bytes),
                Err(error) => break Err(error),
            }
            if chunk["eof"].as_bool() == Some(true) || chunk["count"].as_u64() == Some(0) {
                break Ok(());
            }
        };
        let closed = self.close_file(handle);
        result.and(closed).map(|()| contents)
    }

    /// Writes `contents` to a guest file, creating or truncating it.
    pub fn write_file(&mut self, guest_path: &str, contents: &[u8]) -> Result<(), AgentError> {
        let handle = self.open_file(guest_path, "w")?;
        let mut result = Ok(());
        for chunk in contents.chunks(FILE_CHUNK_BYTES) {
            let encoded = base64::engine::general_purpose::STANDARD.encode(chunk);
            if let Err(error) =
                self.execute("guest-file-write", Some(json!({ "handle": handle, "buf-b64": encoded })), AGENT_COMMAND_TIMEOUT)
            {
                result = Err(error);
                break;
            }
        }
        let closed = self.close_file(handle);
        result.and(closed)
    }

    /// Sets a user's password (given in clear; the agent hashes it in the guest).
    pub fn set_user_password(&mut self, user: &str, password: &str) -> Result<(), AgentError> {
        let encoded = base64::engine::general_purpose::STANDARD.encode(password.as_bytes());
        self.execute(
            "guest-set-user-password",
            Some(json!({ "username": user, "password": encoded, "crypted": false })),
            AGENT_COMMAND_TIMEOUT,
        )
        .map(drop)
    }

    /// Adds public keys to a user's `~/.ssh/authorized_keys` (the agent skips keys already there).
    pub fn add_ssh_authorized_keys(&mut self, user: &str, keys: &[String]) -> Result<(), AgentError> {
        self.execute(
            "guest-ssh-add-authorized-keys",
            Some(json!({ "username": user, "keys": keys })),
            AGENT_COMMAND_TIMEOUT,
        )
        .map(drop)
    }

    fn open_file(&mut self, guest_path: &str, mode: &str) -> Result<i64, AgentError> {
        let handle = self.execute("guest-file-open", Some(json!({ "path": guest_path, "mode": mode })), AGENT_COMMAND_TIMEOUT)?;
        handle.as_i64().ok_or_else(|| AgentError::UnexpectedReply { command: "guest-file-open".to_owned(), reply: handle.to_string() })
    }

    fn close_file(&mut self, handle: i64) -> Result<(), AgentError> {
        self.execute("guest-file-close", Some(json!({ "handle": handle })), AGENT_COMMAND_TIMEOUT).map(drop)
    }

    fn write_bytes(&mut self, bytes: &[u8]) -> Result<(), AgentError> {
        self.writer.write_all(bytes).map_err(|source| AgentError::Io { socket: self.socket.clone(), source })
    }

    fn set_deadline(&mut self, command: &str, deadline: Instant) -> Result<(), AgentError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(AgentError::Timeout { command: command.to_owned() });
        }
        self.reader
            .get_ref()
            .set_read_timeout(Some(remaining))
            .map_err(|source| AgentError::Io { socket: self.socket.clone(), source })
    }

    fn skip_until_delimiter(&mut self, deadline: Instant) -> Result<(), AgentError> {
        let mut byte = [0u8];
        loop {
            self.set_deadline("guest-sync-delimited", deadline)?;
            match self.reader.read(&mut byte) {
                Ok(0) => return Err(AgentError::Closed { socket: self.socket.clone(), command: "guest-sync-delimited".to_owned() }),
                Ok(_) if byte[0] == 0xFF => return Ok(()),
                Ok(_) => continue,
                Err(error) => return Err(self.read_error("guest-sync-delimited", error)),
            }
        }
    }

    fn read_message(&mut self, command: &str, deadline: Instant) -> Result<Value, AgentError> {
        let mut line = Vec::new();
        loop {
            line.clear();
            self.set_deadline(command, deadline)?;
            match self.reader.read_until(b'\n', &mut line) {
                Ok(0) => return Err(AgentError::Closed { socket: self.socket.clone(), command: command.to_owned() }),
                Ok(_) => {
                    // Skip blank lines and stray delimiters; a line that is not JSON is noise
                    // from a reset parser, not a reply.
                    let text = String::from_utf8_lossy(&line);
                    let trimmed = text.trim_matches(|c: char| c.is_whitespace() || c == '\u{FFFD}');
                    if trimmed.is_empty() {
                        continue;
                    }
                    match serde_json::from_str::<Value>(trimmed) {
                        Ok(message) if message.is_object() => return Ok(message),
                        _ => continue,
                    }
                }
                Err(error) => return Err(self.read_error(command, error)),
            }
        }
    }

    fn read_error(&self, command: &str, error: std::io::Error) -> AgentError {
        match error.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                AgentError::Timeout { command: command.to_owned() }
            }
            _ => AgentError::Io { socket: self.socket.clone(), source: error },
        }
    }
}

fn decode_base64_field(message: &Value, field: &str) -> Result<Vec<u8>, AgentError> {
    match message.get(field).and_then(Value::as_str) {
        None => Ok(Vec::new()),
        Some(text) => base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|error| AgentError::UnexpectedReply { command: field.to_owned(), reply: error.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_fields_decode_and_absent_fields_are_empty() {
        let status = json!({ "exited": true, "exitcode": 0, "out-data": "aGVsbG8K" });
        assert_eq!(decode_base64_field(&status, "out-data").unwrap(), b"hello\n");
        assert_eq!(decode_base64_field(&status, "err-data").unwrap(), b"");
        assert!(decode_base64_field(&json!({ "out-data": "!!" }), "out-data").is_err());
    }
}
