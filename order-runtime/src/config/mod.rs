//! Configuration: one [`Settings`] tree, built in layers (later wins):
//!
//! 1. built-in defaults ([`Settings::default`], the local development values);
//! 2. the YAML file (`--config`, default `config/config.yaml`, optional when not named);
//! 3. environment variables `ORDER__SECTION__KEY` (`ORDER__DATABASE__HOST=db`);
//!    lists as comma-separated text (`ORDER__KAFKA__BROKERS=a:9092,b:9092`);
//! 4. command-line `--set section.key=value` flags, read like environment values.
//!
//! Environment and flag values are plain text; each is read as the type of the
//! key it sets (a password of digits stays text, a port must be a number).
//! Every error names the key and where the bad value came from, and an
//! unknown key is an error, so a typo never passes silently.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

pub use order_core::settings::{DatabaseSettings, Driver, RedisSettings, Secret, duration_text};
pub use sections::*;

mod checks;
mod sections;

/// The prefix of configuration environment variables.
pub const ENV_PREFIX: &str = "ORDER__";

/// The default configuration file, relative to the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "config/config.yaml";

/// What went wrong while building the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The named file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid YAML or not a mapping.
    #[error("{path}: invalid YAML: {message}")]
    Yaml {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A key that the configuration does not have.
    #[error("{key}: unknown configuration key (from {origin})")]
    UnknownKey {
        /// The dotted key.
        key: String,
        /// File, variable or flag that named it.
        origin: String,
    },
    /// A value that does not fit its key.
    #[error("{key}: {message}")]
    Invalid {
        /// The dotted key.
        key: String,
        /// What is wrong, and where the value came from when known.
        message: String,
    },
}

impl ConfigError {
    fn invalid(key: &str, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// Where the layers come from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The YAML file; `required` says whether it must exist.
    pub file: Option<(PathBuf, bool)>,
    /// `(name, value)` pairs; those starting with [`ENV_PREFIX`] are read.
    pub env: Vec<(String, String)>,
    /// `key=value` overrides, applied last.
    pub overrides: Vec<String>,
}

impl Sources {
    /// The usual sources: `file` (or the default file, optional), the process
    /// environment and `overrides`.
    #[must_use]
    pub fn standard(file: Option<&Path>, overrides: &[String]) -> Self {
        Self {
            file: Some(match file {
                Some(path) => (path.to_path_buf(), true),
                None => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
            }),
            env: std::env::vars().collect(),
            overrides: overrides.to_vec(),
        }
    }
}

impl Settings {
    /// Builds the settings from defaults and the given layers, then validates them.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first bad key.
    pub fn load(sources: &Sources) -> Result<Self, ConfigError> {
        let mut tree = serde_json::to_value(Settings::default()).expect("defaults serialize");

        if let Some((path, required)) = &sources.file {
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    let overlay: Value =
                        serde_yaml_ng::from_str(&text).map_err(|e| ConfigError::Yaml {
                            path: path.clone(),
                            message: e.to_string(),
                        })?;
                    match overlay {
                        Value::Null => {}
                        Value::Object(_) => {
                            merge(&mut tree, overlay, "", &path.display().to_string())?
                        }
                        _ => {
                            return Err(ConfigError::Yaml {
                                path: path.clone(),
                                message: "the top level must be a mapping of sections".into(),
                            });
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {}
                Err(source) => {
                    return Err(ConfigError::Read {
                        path: path.clone(),
                        source,
                    });
                }
            }
        }

        let mut env: Vec<_> = sources
            .env
            .iter()
            .filter_map(|(name, value)| {
                name.strip_prefix(ENV_PREFIX)
                    .map(|rest| (name, rest, value))
            })
            .collect();
        env.sort();
        for (name, rest, value) in env {
            let key = rest
                .split("__")
                .map(str::to_ascii_lowercase)
                .collect::<Vec<_>>()
                .join(".");
            set_text(
                &mut tree,
                &key,
                value,
                &format!("environment variable {name}"),
            )?;
        }

        for item in &sources.overrides {
            let (key, value) = item.split_once('=').ok_or_else(|| {
                ConfigError::invalid(
                    item,
                    "a --set flag must read key=value, e.g. --set database.port=5433",
                )
            })?;
            set_text(&mut tree, key.trim(), value, &format!("flag --set {item}"))?;
        }

        let settings: Settings = serde_path_to_error::deserialize(tree).map_err(|e| {
            let key = e.path().to_string();
            ConfigError::invalid(&key, e.into_inner().to_string())
        })?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks the rules across keys; each key's own rule is checked as it is
    /// read (`deserialize_with`: [`order_core::settings::check`] and
    /// [`checks`]).
    ///
    /// # Errors
    /// A [`ConfigError::Invalid`] naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let check = |ok: bool, key: &str, message: &str| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::invalid(key, message))
            }
        };
        let db = &self.database;
        if !db.url.is_empty() {
            check(
                ["postgres://", "postgresql://", "mysql://", "mariadb://"]
                    .iter()
                    .any(|s| db.url.expose().starts_with(s)),
                "database.url",
                "must start with postgres://, postgresql://, mysql:// or mariadb://",
            )?;
        } else {
            check(!db.host.is_empty(), "database.host", "must not be empty")?;
            check(
                !db.dbname.is_empty(),
                "database.dbname",
                "must not be empty",
            )?;
        }
        check(
            !self.kafka.enabled || self.kafka.brokers.iter().any(|b| !b.is_empty()),
            "kafka.brokers",
            "must name at least one broker when kafka.enabled is true",
        )?;
        check(
            self.kafka.dead_letter_topic != self.kafka.topic,
            "kafka.dead_letter_topic",
            "must differ from kafka.topic",
        )?;
        let c = &self.compensator;
        check(
            c.backoff_max >= c.backoff_base,
            "compensator.backoff_max",
            "must be at least compensator.backoff_base",
        )?;
        let e = &self.events;
        check(
            e.backoff_max >= e.backoff_base,
            "events.backoff_max",
            "must be at least events.backoff_base",
        )?;
        check(
            self.api.readonly_token.is_empty() || self.api.readonly_token != self.api.admin_token,
            "api.readonly_token",
            "must differ from api.admin_token (a read-only token that acts is not read-only)",
        )?;
        Ok(())
    }

    /// RabbitMQ prefetch: the configured value, or 2 × `worker.batch_size`.
    #[must_use]
    pub fn rabbitmq_prefetch(&self) -> u16 {
        self.rabbitmq.prefetch.unwrap_or_else(|| {
            u16::try_from(self.worker.batch_size.saturating_mul(2)).unwrap_or(u16::MAX)
        })
    }
}

/// Parses a cron expression exactly as the compensator's scheduler does:
/// six fields (seconds first), an optional seventh for the year.
///
/// # Errors
/// What is wrong with `expr` (the loader adds the key).
pub fn parse_cron(expr: &str) -> Result<croner::Cron, String> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(expr)
        .map_err(|e| {
            format!(
                "expected a cron expression with seconds, e.g. \"*/10 * * * * *\" ({e}): {expr:?}"
            )
        })
}

/// Deep-merges `overlay` into `base`; keys must already exist in `base`.
fn merge(base: &mut Value, overlay: Value, prefix: &str, origin: &str) -> Result<(), ConfigError> {
    let (Value::Object(base_map), Value::Object(overlay_map)) = (base, overlay) else {
        unreachable!("merge is called on objects only");
    };
    for (name, value) in overlay_map {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let Some(slot) = base_map.get_mut(&name) else {
            return Err(ConfigError::UnknownKey {
                key,
                origin: origin.to_owned(),
            });
        };
        match (slot.is_object(), value) {
            (_, Value::Null) => {}
            (true, value @ Value::Object(_)) => merge(slot, value, &key, origin)?,
            (true, _) => {
                return Err(ConfigError::invalid(
                    &key,
                    format!("is a section; set its keys instead (in {origin})"),
                ));
            }
            (false, value) => *slot = value,
        }
    }
    Ok(())
}

/// Sets the dotted `key` from text, read as the type of the value it replaces.
fn set_text(tree: &mut Value, key: &str, text: &str, origin: &str) -> Result<(), ConfigError> {
    let unknown = || ConfigError::UnknownKey {
        key: key.to_owned(),
        origin: origin.to_owned(),
    };
    let mut slot = &mut *tree;
    for part in key.split('.') {
        slot = slot
            .as_object_mut()
            .and_then(|m: &mut Map<String, Value>| m.get_mut(part))
            .ok_or_else(unknown)?;
    }
    let bad = |message: String| ConfigError::invalid(key, format!("{message} (from {origin})"));
    let parsed = match &*slot {
        Value::Object(_) => return Err(bad("is a section; set its keys instead".into())),
        Value::Bool(_) => Value::Bool(
            parse_bool(text).ok_or_else(|| bad(format!("expected true or false, got {text:?}")))?,
        ),
        Value::Number(n) if n.is_f64() => text
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| bad(format!("expected a number, got {text:?}")))?,
        Value::Number(_) => Value::Number(
            text.trim()
                .parse::<i64>()
                .map(Into::into)
                .map_err(|e| bad(format!("{e}: {text:?}")))?,
        ),
        Value::Array(_) => Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_owned()))
                .collect(),
        ),
        Value::String(_) => Value::String(text.to_owned()),
        // An optional key that is unset by default: a number if it reads as one.
        Value::Null => text
            .trim()
            .parse::<i64>()
            .map(Into::into)
            .map_err(|e| bad(format!("{e}: {text:?}")))
            .map(Value::Number)?,
    };
    *slot = parsed;
    Ok(())
}

fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
