//! `geoprov-demo`: the scenario of `make demo` ([`geoprov_tests::demo`]):
//! geoprov's whole control plane on this machine, two regions, on the
//! harness the tests use. Exits non-zero on any mismatch.
//!
//! `--profile` chooses the build whose functions, CLI and emulator run
//! ([`geoprov_tests::use_profile`]).
//!
//! Arguments: `--devices`, `--jitr`, `--jitr-connect`,
//! `--profile release|debug`, `--report`, `--seed`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use geoprov_tests::demo::Args;

const USAGE: &str = "usage: geoprov-demo [--devices N] [--jitr N] [--jitr-connect N] \
[--profile release|debug] [--report PATH] [--seed N]

make demo: geoprov's whole control plane on this machine, two regions.

  --devices N        the factory manifest's devices (200)
  --jitr N           CSRs to the cert issuer (50)
  --jitr-connect N   how many JITR devices connect with their issued certificates (5)
  --profile P        the build whose functions, CLI and emulator run: target/P (release)
  --report PATH      the JSON report (target/demo-report.json)
  --seed N           the manifest's countries (7)";

fn main() -> ExitCode {
    let (args, profile) = match parse(std::env::args_os().skip(1)) {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("geoprov-demo: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    geoprov_tests::run_scenario("geoprov_demo", &profile, move || {
        geoprov_tests::demo::run(&args).failures.is_empty()
    })
}

/// The arguments (`--flag value` or `--flag=value`), and the profile.
fn parse(raw: impl Iterator<Item = OsString>) -> Result<(Args, String), String> {
    let mut args = Args::default();
    let mut profile = "release".to_owned();
    for (flag, value) in geoprov_tests::scenario_flags(raw, USAGE)? {
        let number = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        let count = |v: &str| v.parse::<usize>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--devices" => args.devices = count(&value)?,
            "--jitr" => args.jitr = count(&value)?,
            "--jitr-connect" => args.jitr_connect = count(&value)?,
            "--seed" => args.seed = number(&value)?,
            "--report" => args.report = PathBuf::from(value),
            "--profile" if value == "release" || value == "debug" => profile = value,
            "--profile" => return Err(format!("--profile {value}: release or debug")),
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    Ok((args, profile))
}
