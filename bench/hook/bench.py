"""make bench-hook: what geoprov's Rust hook costs, side by side with a Python 3
+ boto3 hook making the same DynamoDB calls (the yardstick).

The backend is an instant DynamoDB stub (bench/lambda_bench.py), over HTTPS
with a CA made at run time (as DynamoDB is HTTPS; both contenders trust it
through AWS_CA_BUNDLE) and over plain HTTP. It answers each Query from a
snapshot of a registry written by `geoprov registry import` into moto, and
every write with success, so both contenders allow on every call and the
figures are the hook's own, not the backend's. moto stays the functional
check (make test); it spends ~46 ms of CPU per transaction, which would
drown both contenders here.

Both run under a keep-alive Runtime API emulator. Per contender and
transport:
  cold start        spawn -> first answer (init, one decision, TLS handshakes)
  init CPU          CPU until the first poll of /next
  first-invocation CPU  CPU of the first decision
  CPU per warm decision  over N warm decisions
  warm p50 / p99    round trip through the Runtime API
Cold starts alternate between the contenders; CPU per warm decision is the
median of ten chunks of the run.
  peak RSS, size
CPU is of the process and all its threads (schedstat). Then the Lambda
estimate: wall clock and cost per million decisions at each memory size.
Prints the tables and writes bench/results/hook.json.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "bench"))
from lambda_bench import (LocalCa, Stub, dynamodb_answer, interleaved_cold_starts,  # noqa: E402
                          print_comparison, print_estimate, registry_snapshot, template_facts, warm)
from local_aws import aws_env  # noqa: E402

WARM = int(os.environ.get("BENCH_INVOCATIONS", "2000"))
COLD = int(os.environ.get("BENCH_COLD_STARTS", "15"))
# Not measured here: the time a decision waits on DynamoDB in a region (two
# consistent Queries at once, then one TransactWriteItems: two round trips
# of DynamoDB's single-digit milliseconds). It is the same at every memory
# size, and it is most of a warm decision's billed duration.
AWS_WAIT_MS = float(os.environ.get("BENCH_AWS_WAIT_MS", "10"))
DEVICES = 100
REGION = "eu-west-1"
TABLE = "geoprov-bench"
RESULTS = ROOT / "bench/results"
PEM = json.loads((ROOT / "events/pre-provisioning-hook/allow.json").read_text())["certificatePem"]
# The template's deadline and timeout. No factory keys: the Python yardstick
# does not check one, and both make the same calls.
HOOK_ENV = {"TABLE_NAME": TABLE, "HOOK_DEADLINE_MS": "3000", "LAMBDA_TIMEOUT_MS": "4000",
            "TRUSTED_CLAIM_CERTIFICATE_IDS": "claim", "REQUIRE_FACTORY_KEY": "false"}


def request(i: int) -> dict:
    serial = f"SN-BENCH-{i % DEVICES:05d}"
    cert = uuid.uuid4().hex * 2
    return {"claimCertificateId": "claim", "certificateId": cert, "certificatePem": PEM,
            "templateArn": "arn:aws:iot:eu-west-1:123456789012:provisioningtemplate/geoprov-fleet",
            "clientId": f"prov-{serial}",
            "parameters": {"SerialNumber": serial, "AWS::IoT::Certificate::Id": cert}}


def measure(contenders: list[tuple[str, list[str], int]], env: dict, transport: str,
            memory_mb: int) -> list[dict]:
    logs = []
    for name, _, _ in contenders:
        log = RESULTS / f"hook-{transport}-{name.split()[0]}.log"
        log.unlink(missing_ok=True)
        logs.append(log)
    colds = interleaved_cold_starts([(command, env, log) for (_, command, _), log in zip(contenders, logs)],
                                    request(0), memory_mb, COLD)
    rows = []
    for (name, command, size), log, cold in zip(contenders, logs, colds):
        steady = warm(command, env, request, WARM, log, memory_mb)
        allowed = sum(bool(a and a.get("allowProvisioning")) for a in cold["answers"] + steady["answers"])
        del cold["answers"], steady["answers"]
        rows.append({"name": name, **cold, **steady, "allowed": allowed, "invocations_total": COLD + WARM,
                     "size_kib": size / 1024})
    return rows


def main() -> int:
    RESULTS.mkdir(parents=True, exist_ok=True)
    facts = template_facts(ROOT, sys.executable)
    memory = facts["memorySizes"]["pre-provisioning-hook"]
    architecture = facts["parameterDefinitions"]["template.yaml"]["Architecture"]["Default"]
    rust_bin = ROOT / "target/release/pre-provisioning-hook"
    py_handler = ROOT / "bench/hook/python_hook/handler.py"
    contenders = [("rust (geoprov)", [str(rust_bin)], rust_bin.stat().st_size),
                  ("python + boto3", [sys.executable, str(py_handler)], py_handler.stat().st_size)]
    snapshot = registry_snapshot([{"serialNumber": f"SN-BENCH-{d:05d}", "maxProvisions": 5}
                                  for d in range(DEVICES)], REGION, TABLE)
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ca = LocalCa(Path(tmp))
        for transport in ("https", "http"):
            stub = Stub({"DynamoDB_20120810": dynamodb_answer(snapshot)}, ca if transport == "https" else None)
            try:
                env = aws_env(stub.endpoint, REGION) | HOOK_ENV | {"AWS_CA_BUNDLE": str(ca.ca_pem)}
                results[transport] = measure(contenders, env, transport, memory)
                if stub.unanswered():
                    print(f"the stub was asked what it does not answer: {stub.unanswered()[:3]}")
                    return 1
            finally:
                stub.close()

    print(f"\npre-provisioning hook: release Rust vs Python 3 + boto3, instant DynamoDB stub on 127.0.0.1,"
          f" {os.cpu_count()} cores; {COLD} cold starts and {WARM} warm decisions each")
    print_comparison(results, "decision")
    for transport in ("https", "http"):
        for row in results[transport]:
            print(f"{transport} {row['name']}: allowed {row['allowed']} of {row['invocations_total']};"
                  f" CPU per warm decision by /proc/<pid>/stat ticks: {row['cpu_per_invocation_ms_from_stat']:.2f} ms")
    print("ratio: python / rust. size: Rust = release binary; Python = handler source (boto3 comes with"
          " the Lambda runtime)")

    denied = [f"{t} {r['name']}" for t in results for r in results[t] if r["allowed"] != r["invocations_total"]]
    if denied:
        print(f"not every decision was an allow, so the contenders did not do the same work: {denied}")
        return 1

    rust = results["https"][0]
    print(f"\nLambda estimate for the Rust hook over HTTPS ({architecture}): CPU x 1769/MemorySize;"
          f" a warm decision also waits ~{AWS_WAIT_MS:g} ms on DynamoDB (assumed, BENCH_AWS_WAIT_MS)")
    estimates = print_estimate(rust, memory, architecture, AWS_WAIT_MS, "decision")
    out = RESULTS / "hook.json"
    out.write_text(json.dumps({"results": results, "lambda_estimate": estimates,
                               "aws_wait_ms": AWS_WAIT_MS, "architecture": architecture,
                               "memory_mb": memory}, indent=2) + "\n")
    print(f"written: {out.relative_to(ROOT)}; function logs: bench/results/hook-*.log")
    return 0


if __name__ == "__main__":
    sys.exit(main())
