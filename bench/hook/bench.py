"""make bench-hook: geoprov's Rust hook against a Python 3 + boto3 hook.

Both run behind cargo-lambda's Runtime API emulator against one moto server
on 127.0.0.1, each doing the same registry read and conditional write for
new devices. Measured per contender, in one run:
  cold start  process start -> first response (includes config, SDK setup)
  warm        p50 / p99 round trip of N invocations through the emulator
  peak RSS    VmHWM of the function process after the run
  size        release binary (Rust) / handler source (Python; boto3 comes
              with the Lambda Python runtime)
Prints a table and the Rust/Python ratios, and writes bench/results/hook.json.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from local_aws import ROOT, Processes, aws_env, function_env, geoprov, invoke, start_moto, start_runtime_emulator  # noqa: E402

WARM = int(os.environ.get("BENCH_INVOCATIONS", "2000"))
# Provisionings per device. moto copies the whole table for each item of a
# TransactWriteItems, so the table is kept small: a device per 20 invocations
# rather than one per invocation.
PER_DEVICE = 20
RESULTS = ROOT / "bench/results"
REGION = "eu-west-1"
PEM = json.loads((ROOT / "events/pre-provisioning-hook/allow.json").read_text())["certificatePem"]


def request(serial: str) -> dict:
    cert = uuid.uuid4().hex * 2
    return {"claimCertificateId": "claim", "certificateId": cert, "certificatePem": PEM,
            "templateArn": "arn:aws:iot:eu-west-1:123456789012:provisioningtemplate/geoprov-fleet",
            "clientId": f"prov-{serial}",
            "parameters": {"SerialNumber": serial, "AWS::IoT::Certificate::Id": cert}}


def device(prefix: str, invocation: int) -> str:
    return f"{prefix}-{invocation // PER_DEVICE:05d}"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(name: str, command: list[str], size_bytes: int, prefix: str, env: dict[str, str]) -> dict:
    with Processes() as procs:
        port = start_runtime_emulator(procs)
        started = time.perf_counter()
        log = RESULTS / f"{prefix.lower()}.log"
        proc = procs.start(command, env=env | function_env(port),
                           stdout=open(log, "w"), stderr=subprocess.STDOUT)
        first = invoke(port, request(device(prefix, 0)))
        cold_ms = (time.perf_counter() - started) * 1000
        latencies, allowed = [], int(first.get("allowProvisioning", False))
        for i in range(1, WARM + 1):
            t = time.perf_counter()
            answer = invoke(port, request(device(prefix, i)))
            latencies.append((time.perf_counter() - t) * 1000)
            allowed += int(answer.get("allowProvisioning", False))
        rss = peak_rss_mib(proc.pid)
    return {"name": name, "cold_start_ms": cold_ms, "warm_p50_ms": statistics.median(latencies),
            "warm_p99_ms": percentile(latencies, 99), "peak_rss_mib": rss,
            "size_kib": size_bytes / 1024, "invocations": WARM + 1, "allowed": allowed, "log": str(log)}


def contender(name: str, command: list[str], size_bytes: int, prefix: str) -> dict:
    """One contender against its own moto and table, so neither pays for the
    other's items (moto copies every table on each transaction)."""
    with Processes() as procs:
        endpoint = start_moto(procs)
        # The manifest has no factory keys, and neither contender checks one:
        # both make the same DynamoDB calls, which is what is compared.
        env = aws_env(endpoint, REGION) | {"TABLE_NAME": "geoprov-bench", "HOOK_DEADLINE_MS": "4200",
                                           "LAMBDA_TIMEOUT_MS": "5000", "TRUSTED_CLAIM_CERTIFICATE_IDS": "claim",
                                           "REQUIRE_FACTORY_KEY": "false"}
        geoprov(env, "registry", "create-table")
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as manifest:
            for d in range(WARM // PER_DEVICE + 1):
                manifest.write(json.dumps({"serialNumber": f"{prefix}-{d:05d}", "maxProvisions": PER_DEVICE}) + "\n")
        geoprov(env, "registry", "import", manifest.name)
        os.unlink(manifest.name)
        return run(name, command, size_bytes, prefix, env)


def main() -> int:
    RESULTS.mkdir(parents=True, exist_ok=True)
    rust_bin = ROOT / "target/release/pre-provisioning-hook"
    py_handler = ROOT / "bench/hook/python_hook/handler.py"
    results = [
        contender("rust (geoprov)", [str(rust_bin)], rust_bin.stat().st_size, "SN-RUST"),
        contender("python + boto3", [sys.executable, str(py_handler)], py_handler.stat().st_size, "SN-PY"),
    ]

    rows = [("cold start (ms)", "cold_start_ms"), ("warm p50 (ms)", "warm_p50_ms"),
            ("warm p99 (ms)", "warm_p99_ms"), ("peak RSS (MiB)", "peak_rss_mib"), ("size (KiB)", "size_kib")]
    rust, python = results
    print(f"\npre-provisioning hook, {WARM} warm invocations each, moto on 127.0.0.1, {os.cpu_count()} cores")
    print(f"{'':<18}{rust['name']:>16}{python['name']:>16}{'rust/python':>14}")
    for label, key in rows:
        print(f"{label:<18}{rust[key]:>16.1f}{python[key]:>16.1f}{rust[key] / python[key]:>14.2f}")
    print(f"{'allowed':<18}{rust['allowed']:>16}{python['allowed']:>16}   of {WARM + 1} each")
    print("size: Rust = release binary; Python = handler source (boto3 ships with the Lambda runtime)")
    print("a provisioning not allowed here is one the table did not answer in time (the hook's")
    print("deadline); function logs: bench/results/sn-rust.log, bench/results/sn-py.log")
    out = RESULTS / "hook.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
