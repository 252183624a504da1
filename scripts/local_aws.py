"""Local AWS for geoprov scripts: moto server and cargo-lambda's Runtime API
emulator on 127.0.0.1, started and always stopped by a context manager."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
# The geoprov CLI the scripts run; a script may point it at a release build.
GEOPROV = ROOT / "target/debug/geoprov"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def aws_env(endpoint: str, region: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_EC2_METADATA_DISABLED": "true",
        "PATH": os.environ.get("PATH", ""),
    }


class Processes(contextlib.ExitStack):
    """Every process started here is stopped on exit, Ctrl-C included."""

    def start(self, args: list[str], env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
        proc = subprocess.Popen(args, env=env, cwd=ROOT, **kw)
        self.callback(_stop, proc)
        return proc


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_moto(procs: Processes) -> str:
    proc = procs.start(
        [sys.executable, str(ROOT / "tests/support/moto_launcher.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    port = int(proc.stdout.readline())
    return f"http://127.0.0.1:{port}"


def start_runtime_emulator(procs: Processes) -> int:
    port = free_port()
    procs.start(
        [str(VENV_BIN / "cargo-lambda"), "lambda", "watch", "--only-lambda-apis",
         "-A", "127.0.0.1", "-P", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port)
    return port


def function_env(runtime_port: int) -> dict[str, str]:
    """The variables Lambda gives a function, for cargo-lambda's emulator."""
    return {
        "AWS_LAMBDA_RUNTIME_API": f"http://127.0.0.1:{runtime_port}/.rt",
        "AWS_LAMBDA_FUNCTION_NAME": "_",
        "AWS_LAMBDA_FUNCTION_VERSION": "1",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
    }


def invoke(runtime_port: int, payload: dict, timeout: float = 30) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{runtime_port}/2015-03-31/functions/_/invocations",
        data=json.dumps(payload).encode(),
        method="POST",
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def geoprov(env: dict[str, str], *args: str) -> dict:
    out = subprocess.run(
        [str(GEOPROV), *args],
        env=env, cwd=ROOT, check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout)
