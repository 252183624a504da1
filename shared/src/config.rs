//! Environment configuration, read once at cold start, with errors that name
//! the variable and say what is wrong with it.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::str::FromStr;

/// A configuration value that is missing or cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is required but not set")]
    Missing { name: &'static str },
    #[error("{name}={value:?} is invalid: {reason}")]
    Invalid {
        name: &'static str,
        value: String,
        reason: String,
    },
}

impl ConfigError {
    pub fn invalid(name: &'static str, value: &str, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            name,
            value: value.to_owned(),
            reason: reason.into(),
        }
    }
}

/// A snapshot of environment variables. Functions read the process
/// environment once; tests build one from pairs without touching the process.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
    /// Every name looked up, so a test can hold the deployment template to
    /// exactly the variables a function reads.
    read: RefCell<BTreeSet<String>>,
}

/// The provisioning client-id prefix when none is configured.
pub const DEFAULT_CLIENT_ID_PREFIX: &str = "prov-";

impl Env {
    /// `PROVISIONING_CLIENT_ID_PREFIX`: a provisioning connection's client id
    /// is this prefix and the serial. 1-32 characters of `[A-Za-z0-9:_-]`;
    /// an empty prefix would make the provisioning client id the device's
    /// own, which a claim-key holder could then take over.
    pub fn provisioning_client_id_prefix(&self) -> Result<String, ConfigError> {
        const NAME: &str = "PROVISIONING_CLIENT_ID_PREFIX";
        let prefix = self.optional(NAME).unwrap_or(DEFAULT_CLIENT_ID_PREFIX);
        let ok = (1..=32).contains(&prefix.len())
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b':'));
        match ok {
            true => Ok(prefix.to_owned()),
            false => Err(ConfigError::invalid(
                NAME,
                prefix,
                "must be 1-32 characters of [A-Za-z0-9:_-]",
            )),
        }
    }

    pub fn from_process() -> Self {
        Env {
            vars: std::env::vars().collect(),
            read: RefCell::default(),
        }
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            read: RefCell::default(),
        }
    }

    /// The value, with an unset or blank variable treated as absent.
    pub fn optional(&self, name: &str) -> Option<&str> {
        self.read.borrow_mut().insert(name.to_owned());
        self.vars
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    pub fn required(&self, name: &'static str) -> Result<&str, ConfigError> {
        self.optional(name).ok_or(ConfigError::Missing { name })
    }

    /// Parses the variable, or gives `default` when it is absent.
    pub fn parse_or<T>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        match self.optional(name) {
            None => Ok(default),
            Some(raw) => raw
                .parse()
                .map_err(|e: T::Err| ConfigError::invalid(name, raw, e.to_string())),
        }
    }

    /// `true` or `false` (any case); absent gives `default`.
    pub fn flag_or(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.optional(name) {
            None => Ok(default),
            Some(raw) if raw.eq_ignore_ascii_case("true") => Ok(true),
            Some(raw) if raw.eq_ignore_ascii_case("false") => Ok(false),
            Some(raw) => Err(ConfigError::invalid(name, raw, "expected true or false")),
        }
    }

    /// The names looked up so far, set or not.
    pub fn names_read(&self) -> BTreeSet<String> {
        self.read.borrow().clone()
    }

    /// A comma-separated list with blanks dropped; absent gives an empty list.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.optional(name)
            .map(|raw| {
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_values_count_as_absent() {
        let env = Env::from_pairs([("A", "  ")]);
        assert_eq!(env.optional("A"), None);
        assert_eq!(env.required("A"), Err(ConfigError::Missing { name: "A" }));
    }

    #[test]
    fn parse_errors_name_the_variable_and_the_value() {
        let env = Env::from_pairs([("N", "ten")]);
        let err = env.parse_or::<u32>("N", 3).unwrap_err();
        assert!(err.to_string().starts_with("N=\"ten\" is invalid"), "{err}");
    }

    #[test]
    fn flags_accept_only_true_and_false() {
        let env = Env::from_pairs([("T", "TRUE"), ("F", "false"), ("X", "yes")]);
        assert_eq!(env.flag_or("T", false), Ok(true));
        assert_eq!(env.flag_or("F", true), Ok(false));
        assert_eq!(env.flag_or("MISSING", true), Ok(true));
        assert!(env.flag_or("X", false).is_err());
    }

    #[test]
    fn remembers_every_name_looked_up() {
        let env = Env::from_pairs([("A", "1")]);
        let _ = env.optional("A");
        let _ = env.parse_or("B", 2u8);
        assert_eq!(
            env.names_read(),
            BTreeSet::from(["A".to_owned(), "B".to_owned()])
        );
    }

    #[test]
    fn lists_split_on_commas_and_drop_blanks() {
        let env = Env::from_pairs([("L", " a, b ,,c ")]);
        assert_eq!(env.list("L"), ["a", "b", "c"]);
        assert!(env.list("MISSING").is_empty());
    }
}
