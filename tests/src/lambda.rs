//! Real Lambda binaries under cargo-lambda's Runtime API emulator
//! (`cargo lambda watch --only-lambda-apis`), invoked over HTTP as Lambda
//! invokes them.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{free_port, python, workspace_root};

/// The function name cargo-lambda gives a function it did not start itself.
const EXTERNAL_FUNCTION: &str = "_";

/// A running `cargo lambda watch --only-lambda-apis` on 127.0.0.1.
pub struct RuntimeEmulator {
    port: u16,
    child: Child,
}

impl RuntimeEmulator {
    pub fn start() -> Self {
        let port = free_port();
        let cargo_lambda = python()
            .parent()
            .expect("venv bin directory")
            .join("cargo-lambda");
        let child = Command::new(&cargo_lambda)
            .args([
                "lambda",
                "watch",
                "--only-lambda-apis",
                "-A",
                "127.0.0.1",
                "-P",
            ])
            .arg(port.to_string())
            .current_dir(workspace_root())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", cargo_lambda.display()));
        wait_for_port(port, Duration::from_secs(30));
        RuntimeEmulator { port, child }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts `binary` as the function behind this emulator, with the Lambda
    /// runtime variables plus `env`.
    pub fn run_function(&self, binary: &Path, env: &BTreeMap<String, String>) -> FunctionProcess {
        let mut command = Command::new(binary);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env(
                "AWS_LAMBDA_RUNTIME_API",
                format!("http://127.0.0.1:{}/.rt", self.port),
            )
            .env("AWS_LAMBDA_FUNCTION_NAME", EXTERNAL_FUNCTION)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_LOG_FORMAT", "JSON");
        command.envs(env);
        // Its log (stdout and stderr) goes to a file, as Lambda sends it to CloudWatch.
        let log = std::env::temp_dir().join(crate::unique_table("geoprov-function") + ".log");
        let file = std::fs::File::create(&log).expect("function log file");
        command
            .stdout(file.try_clone().expect("function log file"))
            .stderr(file);
        FunctionProcess {
            child: command.spawn().expect("start function binary"),
            log,
        }
    }

    /// Invokes the function with `payload` and returns its response.
    pub fn invoke(&self, payload: &Value) -> Value {
        let url = format!(
            "http://127.0.0.1:{}/2015-03-31/functions/{EXTERNAL_FUNCTION}/invocations",
            self.port
        );
        ureq::post(&url)
            .send_json(payload)
            .unwrap_or_else(|e| panic!("invoke {url}: {e}"))
            .body_mut()
            .read_json()
            .expect("function response is JSON")
    }

    /// Invokes the function with `payload` and returns the HTTP status and
    /// the body: a function error is an answer here (its errorType and
    /// errorMessage), as it is to the service that invoked it.
    pub fn invoke_raw(&self, payload: &Value) -> (u16, Value) {
        let url = format!(
            "http://127.0.0.1:{}/2015-03-31/functions/{EXTERNAL_FUNCTION}/invocations",
            self.port
        );
        let mut response = ureq::post(&url)
            .config()
            .http_status_as_error(false)
            .build()
            .send_json(payload)
            .unwrap_or_else(|e| panic!("invoke {url}: {e}"));
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_json()
            .expect("function response is JSON");
        (status, body)
    }
}

impl Drop for RuntimeEmulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A function binary running behind the emulator; stopped when dropped.
pub struct FunctionProcess {
    child: Child,
    log: PathBuf,
}

impl FunctionProcess {
    /// The process has exited (a failed cold start), with its status.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if started.elapsed() >= limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the function has logged so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for FunctionProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn wait_for_port(port: u16, limit: Duration) {
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < limit,
            "nothing listens on 127.0.0.1:{port} after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
