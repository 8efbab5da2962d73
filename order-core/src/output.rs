//! A command's own output on stdout (`run-once`, `token`, `migrate`), one line
//! each; logs go to stderr (see [`crate::telemetry`]).
//!
//! The reader of stdout may go away (`… | head`, `… | jq` quitting early): a
//! write that fails is given up quietly, never a panic, and the command still
//! exits with the code its work earned.

use std::io::{self, Write};

/// Prints `line` and a newline to stdout; a closed stdout is ignored.
pub fn line(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// Prints `value` as one line of JSON to stdout; a closed stdout is ignored.
///
/// # Errors
/// When `value` cannot be serialised.
pub fn json<T: serde::Serialize>(value: &T) -> serde_json::Result<()> {
    line(&serde_json::to_string(value)?);
    Ok(())
}

/// Prints `line` and a newline to stderr, for the few messages written
/// before logging starts (a configuration error) or after it ends (the
/// final error); a closed stderr is ignored.
pub fn error_line(line: &str) {
    let _ = writeln!(io::stderr().lock(), "{line}");
}
