//! A test that must change the process environment (a proxy the HTTP client
//! reads, moto's recording) cannot share a process with other tests: it
//! runs alone, in a child process of the test binary that starts with the
//! environment it needs. Nothing calls `std::env::set_var`.

use std::ffi::OsStr;
use std::process::Command;

/// Set in the child to the name of the one test it runs.
const CHILD: &str = "GEOPROV_TEST_CHILD";

/// In the child process made for `test`, true: the caller runs the test's
/// body. Anywhere else, runs `test` (its module path from `module_path!()`
/// and its name) alone in a child process of this test binary with `env`
/// added to the environment, panics unless exactly that one test ran and
/// passed, and returns false.
pub fn alone(module: &str, name: &str, env: &[(&str, &OsStr)]) -> bool {
    // libtest names a test by its path inside the crate.
    let path = match module.split_once("::") {
        Some((_, inner)) => format!("{inner}::{name}"),
        None => name.to_owned(),
    };
    if std::env::var_os(CHILD).is_some_and(|child| child == path.as_str()) {
        return true;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut child = Command::new(exe);
    child
        .args([path.as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, &path);
    for (key, value) in env {
        child.env(key, value);
    }
    let out = child.output().expect("the test binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{path} in a child process: {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    false
}
