//! `geoprov-gameday`: the game day of `make gameday`
//! ([`geoprov_tests::gameday`]): a fleet loses its region, on this machine.
//! Exits non-zero when a goal is missed.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use geoprov_tests::gameday::Args;

const USAGE: &str = "usage: geoprov-gameday [--devices N] [--quota-scale F] [--recheck-seconds S] \
[--phase-limit-seconds S] [--launch-rate R] [--profile release|debug] [--report PATH] [--picture PATH|none]

make gameday: a fleet over three locations and two regions loses us-east-1, re-homes
to eu-west-1 and goes home after the failback.

  --devices N              the fleet (2000)
  --quota-scale F          IoT's published rates times F in every emulator (0.2)
  --launch-rate R          devices powered on per second in the onboarding wave (5)
  --recheck-seconds S      how often a connected device resolves the name again (3)
  --phase-limit-seconds S  a phase's devices not working by then are stranded (900)
  --profile P              the build whose functions, CLI and emulator run: target/P (release)
  --report PATH            the JSON report (target/gameday-report.json)
  --picture PATH|none      devices connected per region over time (target/gameday.png)";

fn main() -> ExitCode {
    let (args, profile) = match parse(std::env::args_os().skip(1)) {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("geoprov-gameday: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    geoprov_tests::run_scenario("geoprov_gameday", &profile, move || {
        geoprov_tests::gameday::run(&args).failures.is_empty()
    })
}

/// The arguments (`--flag value` or `--flag=value`), and the profile.
fn parse(raw: impl Iterator<Item = OsString>) -> Result<(Args, String), String> {
    let mut args = Args::default();
    let mut profile = "release".to_owned();
    for (flag, value) in geoprov_tests::scenario_flags(raw, USAGE)? {
        let number = |v: &str| {
            v.parse::<f64>()
                .ok()
                .filter(|n| n.is_finite() && *n > 0.0)
                .ok_or_else(|| format!("{flag} {v}: a positive number"))
        };
        match flag.as_str() {
            "--devices" => {
                args.devices = value
                    .parse()
                    .ok()
                    .filter(|n| *n >= 10)
                    .ok_or_else(|| format!("--devices {value}: 10 or more"))?;
            }
            "--quota-scale" => args.quota_scale = number(&value)?,
            "--launch-rate" => args.launch_rate = number(&value)?,
            "--recheck-seconds" => args.recheck = Duration::from_secs_f64(number(&value)?),
            "--phase-limit-seconds" => {
                args.phase_limit = Duration::from_secs_f64(number(&value)?);
            }
            "--report" => args.report = PathBuf::from(value),
            "--picture" if value == "none" => args.picture = None,
            "--picture" => args.picture = Some(PathBuf::from(value)),
            "--profile" if value == "release" || value == "debug" => profile = value,
            "--profile" => return Err(format!("--profile {value}: release or debug")),
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    Ok((args, profile))
}
