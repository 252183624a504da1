//! The real `geoprov` binary, run as an operator runs it.

use std::collections::BTreeMap;
use std::process::{Command, Output};

use serde_json::Value;

use crate::workspace_binary;

/// `geoprov` with a fixed environment (nothing inherited).
pub struct Geoprov {
    pub env: BTreeMap<String, String>,
}

impl Geoprov {
    pub fn new(env: BTreeMap<String, String>) -> Self {
        Geoprov { env }
    }

    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(workspace_binary("geoprov"))
            .env_clear()
            .envs(&self.env)
            .args(args)
            .output()
            .expect("run geoprov")
    }

    /// Runs a command that must succeed, and parses the JSON it prints.
    pub fn ok(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "geoprov {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("geoprov prints JSON")
    }
}
