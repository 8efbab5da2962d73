//! Logging shared by the binaries: to stderr, never fatal.
//!
//! - Logs go to stderr; stdout is for a command's own output (see
//!   [`crate::output`]), so `order-compensator run-once … | jq` reads JSON only.
//! - Colours only when stderr is a terminal (and `NO_COLOR` is unset): a log
//!   file or a collector gets plain text.
//! - A closed or broken stderr (the reader quit, a log pipe went away) never
//!   stops the process: the line is dropped and counted in
//!   `log_lines_dropped_total`.
//! - `log.level` and `RUST_LOG` are checked: `verbose` or any other word that
//!   is not a level is refused instead of silently disabling every log line.
//! - Other crates' chatter (sqlx notices, the scheduler's lifecycle, HTTP
//!   internals) is held at `warn` while the level is `info` or `debug`, unless
//!   the filter names that crate itself.

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::config::{LogFormat, LogSettings};

/// The levels a filter may name.
pub const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Crates whose INFO and DEBUG lines say nothing an operator needs; held at
/// `warn` unless the filter names them or asks for `trace`.
pub const QUIET_TARGETS: [&str; 11] = [
    "sqlx",
    "tokio_cron_scheduler",
    "lapin",
    "amq_protocol",
    "pinky_swear",
    "rdkafka",
    "hyper",
    "hyper_util",
    "h2",
    "warp",
    "tower",
];

/// Checks a filter (`log.level` or `RUST_LOG`) and builds it, with the
/// third-party targets of [`QUIET_TARGETS`] held at `warn` where the filter
/// leaves them at `info` or `debug`.
///
/// Accepted: comma-separated directives, each a level (`info`) or
/// `target=level` (`order_core=debug`), or a span directive
/// (`target[span]=level`), as `tracing_subscriber::EnvFilter` reads them.
///
/// # Errors
/// A message naming the directive that is not a level.
pub fn parse_filter(text: &str) -> Result<EnvFilter, String> {
    let directives: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    if directives.is_empty() {
        return Err(format!("empty; expected a level: {}", LEVELS.join(", ")));
    }
    let mut bare_level = None;
    for directive in &directives {
        let level = match directive.rsplit_once('=') {
            Some((target, level)) => {
                if target.trim().is_empty() {
                    return Err(format!("{directive:?} names no target before '='"));
                }
                level
            }
            None if directive.contains('[') => continue,
            None => {
                bare_level = Some(directive.to_ascii_lowercase());
                directive
            }
        };
        if !LEVELS.contains(&level.trim().to_ascii_lowercase().as_str()) {
            return Err(format!(
                "{level:?} is not a level; expected one of {} (or target=level, e.g. info,order_core=debug)",
                LEVELS.join(", ")
            ));
        }
    }
    let mut full = directives.join(",");
    if matches!(bare_level.as_deref(), Some("info" | "debug")) {
        for target in QUIET_TARGETS {
            let named = directives.iter().any(|d| {
                d.split(['=', '[']).next().is_some_and(|t| {
                    t.trim() == target || t.trim().starts_with(&format!("{target}::"))
                })
            });
            if !named {
                full.push_str(&format!(",{target}=warn"));
            }
        }
    }
    EnvFilter::builder()
        .parse(&full)
        .map_err(|e| format!("not a valid filter ({e})"))
}

/// The filter in force: `RUST_LOG` when set, else `log.level`.
///
/// # Errors
/// A message naming the source (`RUST_LOG` or `log.level`) and the bad directive.
pub fn filter(settings: &LogSettings) -> Result<EnvFilter, String> {
    match std::env::var("RUST_LOG") {
        Ok(text) if !text.trim().is_empty() => {
            parse_filter(&text).map_err(|e| format!("RUST_LOG: {e}"))
        }
        _ => parse_filter(&settings.level).map_err(|e| format!("log.level: {e}")),
    }
}

/// Installs the global subscriber: logs to stderr, as JSON lines or compact
/// text as `log.format` says, coloured only on a terminal.
///
/// Calling it twice is harmless (the second call does nothing), so tests can
/// call it freely.
///
/// # Errors
/// When `RUST_LOG` or `log.level` is not a valid filter.
pub fn init(settings: &LogSettings) -> Result<(), String> {
    let filter = filter(settings)?;
    let ansi = std::env::var_os("NO_COLOR").is_none() && io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(FmtSpan::NONE)
        .with_target(true)
        .with_writer(QuietStderr)
        .log_internal_errors(false);
    let _ = match settings.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.compact().with_ansi(ansi).try_init(),
    };
    Ok(())
}

/// Log lines lost to a closed or failing stderr since the process started.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Log lines that could not be written (the reader of stderr went away).
#[must_use]
pub fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// stderr, where a failed write is counted instead of reported: a log line
/// must never fail or panic the code that logs it.
#[derive(Debug, Clone, Copy, Default)]
pub struct QuietStderr;

impl<'a> MakeWriter<'a> for QuietStderr {
    type Writer = QuietStderr;

    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

impl Write for QuietStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // The formatter hands over one whole line per event.
        if io::stderr().lock().write_all(buf).is_err() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("log_lines_dropped_total").increment(1);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = io::stderr().flush();
        Ok(())
    }
}

pub use order_core::error_chain;

/// For tests: logs to the test output when `TEST_LOG` is set, else nothing.
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| EnvFilter::new("debug,sqlx=warn")),
            )
            .with_test_writer()
            .try_init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_target_directives_are_accepted() {
        for ok in [
            "info",
            "DEBUG",
            "warn",
            "off",
            "info,order_core=debug",
            "order_worker=trace",
            "info, sqlx=debug",
            "info,order_core[claim]=debug",
        ] {
            assert!(parse_filter(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn words_that_are_not_levels_are_refused_naming_them() {
        for (bad, named) in [
            ("verbose", "\"verbose\""),
            ("info,loud", "\"loud\""),
            ("order_core=chatty", "\"chatty\""),
            ("", "empty"),
            (" , ", "empty"),
            ("=info", "no target"),
        ] {
            let err = parse_filter(bad).expect_err(bad);
            assert!(err.contains(named), "{bad}: {err}");
        }
    }

    #[test]
    fn third_party_targets_are_held_at_warn_unless_named_or_traced() {
        let shown = parse_filter("info").unwrap().to_string();
        assert!(shown.contains("sqlx=warn"), "{shown}");
        assert!(shown.contains("tokio_cron_scheduler=warn"), "{shown}");
        let named = parse_filter("info,sqlx=debug").unwrap().to_string();
        assert!(
            named.contains("sqlx=debug") && !named.contains("sqlx=warn"),
            "{named}"
        );
        let traced = parse_filter("trace").unwrap().to_string();
        assert!(!traced.contains("sqlx=warn"), "{traced}");
        // error is stricter than warn: not loosened for anyone.
        let strict = parse_filter("error").unwrap().to_string();
        assert!(!strict.contains("sqlx=warn"), "{strict}");
    }

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    #[test]
    fn an_error_chain_prints_each_text_once() {
        let err = Layer(
            "opening the database",
            Some(Box::new(Layer(
                "database unavailable: error returned from database: database \"x\" does not exist",
                Some(Box::new(Layer(
                    "error returned from database: database \"x\" does not exist",
                    Some(Box::new(Layer("database \"x\" does not exist", None))),
                ))),
            ))),
        );
        let line = error_chain(&err);
        assert_eq!(line.matches("does not exist").count(), 1, "{line}");
        assert!(
            line.starts_with("opening the database: database unavailable"),
            "{line}"
        );
        let distinct = Layer("a", Some(Box::new(Layer("b", None))));
        assert_eq!(error_chain(&distinct), "a: b");
    }
}
