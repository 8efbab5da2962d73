//! A command's own output on stdout (`run-once`, `token`, `migrate`), one line
//! each; logs go to stderr (see [`crate::telemetry`]).
//!
//! The reader of stdout may go away (`… | head`, `… | jq` quitting early): a
//! write that fails is given up quietly, never a panic, and the command still
//! exits with the code its work earned.

use std::io::{self, Write};

/// Prints `line` and a newline to stdout; a closed stdout (the reader went
/// away) is not an error.
///
/// # Errors
/// Any other failure to write (a full disk behind `> file`).
pub fn line(line: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Prints `value` as one line of JSON to stdout, as [`line`].
///
/// # Errors
/// When `value` cannot be serialised or stdout cannot be written.
pub fn json<T: serde::Serialize>(value: &T) -> io::Result<()> {
    line(&serde_json::to_string(value).map_err(io::Error::other)?)
}

/// Prints `line` and a newline to stderr, for the few messages written
/// before logging starts (a configuration error) or after it ends (the
/// final error); a closed stderr is ignored.
pub fn error_line(line: &str) {
    let _ = writeln!(io::stderr().lock(), "{line}");
}
