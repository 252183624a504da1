"""make bench-activation: what geoprov's Rust device activation (JITR) costs,
side by side with a Python 3 + boto3 activator making the same AWS calls in
the same order (the yardstick).

Every invocation is a whole activation: a registration event of a device
certificate of the fleet CA (made at run time, the serial as subject CN, the
key on record as the factory key), which the function reads, decides on by
the registry's rules and activates. The calls, one round trip per line (the
two Queries go at once):

  IoT DescribeCertificate
  DynamoDB Query x2 (the device's profile and block; its provisionings)
  IoT DescribeThing (none yet)
  IoT DescribeThingGroup
  DynamoDB TransactWriteItems (the commit and its audit event)
  IoT DescribeThing, CreateThing, AddThingToThingGroup, AttachPolicy,
      AttachThingPrincipal, UpdateCertificate (ACTIVE)

The backend is two instant stubs (bench/lambda_bench.py), one per service as
IoT and DynamoDB are two endpoints (each contender then opens and reuses its
connections as it would on AWS), over HTTPS with a CA made at run time (both
contenders trust it through AWS_CA_BUNDLE) and over plain HTTP. DynamoDB is
answered from a snapshot of a registry written by `geoprov registry import`
into moto, IoT by `iot_answer`: the certificate pending, the thing still to
make. Writes succeed and change nothing, so every event is a first
activation. Before measuring, one activation of each contender runs against
recording stubs: both must make exactly the calls above, or no figure is
printed.

Both run under a keep-alive Runtime API emulator. Per contender and
transport:
  cold start        spawn -> first answer (init, one activation, TLS handshakes)
  init CPU          CPU until the first poll of /next
  first-invocation CPU  CPU of the first activation
  CPU per warm activation  over N warm activations
  warm p50 / p99    round trip through the Runtime API
  peak RSS, size
Cold starts alternate between the contenders; CPU per warm activation is the
median of ten chunks of the run. CPU is of the process and all its threads
(schedstat). Then the Lambda estimate: wall clock and cost per million
activations at each memory size, with an assumed wait on AWS per activation.

    BENCH_INVOCATIONS         warm activations per contender (2000)
    BENCH_COLD_STARTS         cold starts per contender (15)
    BENCH_AWS_WAIT_MS         assumed AWS wait per activation (11 round trips x 10 ms)
    BENCH_ACTIVATION_BINARY   the function (target/release/device-activation);
                              the registry is imported with the geoprov CLI beside it
Prints the tables and writes bench/results/activation.json.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "bench"))
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402
from lambda_bench import (LocalCa, Stub, cold_start, dynamodb_answer,  # noqa: E402
                          interleaved_cold_starts, iot_answer, iot_operation, make_ca, print_comparison,
                          print_estimate, registry_snapshot, template_facts, warm)
from local_aws import aws_env  # noqa: E402

WARM = int(os.environ.get("BENCH_INVOCATIONS", "2000"))
COLD = int(os.environ.get("BENCH_COLD_STARTS", "15"))
# What one activation calls, in order (functions/device-activation/src:
# activation.rs, iot.rs, and the registry's device read and commit).
EXPECTED_CALLS = ["IoT DescribeCertificate", "DynamoDB Query", "DynamoDB Query", "IoT DescribeThing",
                  "IoT DescribeThingGroup", "DynamoDB TransactWriteItems", "IoT DescribeThing",
                  "IoT CreateThing", "IoT AddThingToThingGroup", "IoT AttachPolicy",
                  "IoT AttachThingPrincipal", "IoT UpdateCertificate"]
# One round trip per call, but the two Queries, which go at once.
ROUND_TRIPS = len(EXPECTED_CALLS) - 1
# Not measured here: the time an activation waits on IoT and DynamoDB in a
# region, assumed at 10 ms a round trip. It is the same at every memory size.
AWS_WAIT_MS = float(os.environ.get("BENCH_AWS_WAIT_MS", str(ROUND_TRIPS * 10)))
BINARY = Path(os.environ.get("BENCH_ACTIVATION_BINARY", ROOT / "target/release/device-activation")).resolve()
DEVICES = 100
REGION = "eu-west-1"
ACCOUNT = "123456789012"
TABLE = "geoprov-bench"
THING_GROUP = "geoprov-devices"
RESULTS = ROOT / "bench/results"


class Fleet:
    """A fleet CA and one certificate per device: the serial as subject CN
    (what device activation reads), a P-256 key whose SubjectPublicKeyInfo's
    SHA-256 the registry holds as the factory key. Ids as IoT gives them:
    the SHA-256 of the DER."""

    def __init__(self, devices: int):
        now = datetime.datetime.now(datetime.timezone.utc)
        ca_key, ca = make_ca("geoprov bench fleet CA")
        ca_name = ca.subject
        self.ca_id = hashlib.sha256(ca.public_bytes(serialization.Encoding.DER)).hexdigest()
        self.certificates: dict[str, tuple[str, str]] = {}  # id -> (PEM, CA id)
        self.ids: list[str] = []
        self.manifest: list[dict] = []
        for d in range(devices):
            serial = f"SN-BENCH-{d:05d}"
            key = ec.generate_private_key(ec.SECP256R1())
            certificate = (x509.CertificateBuilder()
                           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, serial)]))
                           .issuer_name(ca_name).public_key(key.public_key())
                           .serial_number(x509.random_serial_number())
                           .not_valid_before(now - datetime.timedelta(minutes=5))
                           .not_valid_after(now + datetime.timedelta(days=365))
                           .sign(ca_key, hashes.SHA256()))
            cert_id = hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()
            spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
            self.certificates[cert_id] = (certificate.public_bytes(serialization.Encoding.PEM).decode(), self.ca_id)
            self.ids.append(cert_id)
            self.manifest.append({"serialNumber": serial, "allowedRegions": [REGION, "us-east-1"],
                                  "maxProvisions": 5, "publicKeySha256": hashlib.sha256(spki).hexdigest(),
                                  "attributes": {"model": "bench-1"}})

    def event(self, i: int) -> dict:
        """IoT's registration event for device i's certificate."""
        at = int(time.time() * 1000)
        return {"certificateId": self.ids[i % len(self.ids)], "caCertificateId": self.ca_id, "timestamp": at,
                "certificateStatus": "PENDING_ACTIVATION", "awsAccountId": ACCOUNT,
                "certificateRegistrationTimestamp": str(at)}


def function_env(ddb: Stub, iot: Stub, ca: LocalCa, fleet: Fleet) -> dict[str, str]:
    """The template's variables (REQUIRE_FACTORY_KEY as deployed by default),
    and one endpoint per service."""
    return aws_env(ddb.endpoint, REGION) | {
        "AWS_ENDPOINT_URL_DYNAMODB": ddb.endpoint, "AWS_ENDPOINT_URL_IOT": iot.endpoint,
        "AWS_CA_BUNDLE": str(ca.ca_pem), "TABLE_NAME": TABLE, "DEVICE_POLICY_NAME": "geoprov-DevicePolicy",
        "THING_TYPE_NAME": "geoprov-device", "DEFAULT_THING_GROUP": THING_GROUP,
        "THING_GROUP_PREFIX": "geoprov-", "REQUIRE_FACTORY_KEY": "true", "DEFAULT_MAX_PROVISIONS": "3",
        "FLEET_CA_CERTIFICATE_IDS": fleet.ca_id}


def stubs(snapshot: dict, fleet: Fleet, ca: LocalCa | None, record: Path | None = None) -> tuple[Stub, Stub]:
    """The DynamoDB stub and the IoT stub; with `record`, each call is
    appended to that file as "<monotonic ns> <service> <operation>"."""
    dynamodb = dynamodb_answer(snapshot)
    iot = iot_answer(fleet.certificates, {THING_GROUP}, REGION, ACCOUNT)
    if record is None:
        return Stub({"DynamoDB_20120810": dynamodb}, ca), Stub({}, ca, iot)

    def note(call: str) -> None:
        with open(record, "a") as f:
            f.write(f"{time.monotonic_ns()} {call}\n")

    def recorded_dynamodb(operation: str, body: dict) -> dict:
        note(f"DynamoDB {operation}")
        return dynamodb(operation, body)

    def recorded_iot(method: str, target: str, body: bytes):
        routed = iot_operation(method, target)
        note(f"IoT {routed[0] if routed else method + ' ' + target}")
        return iot(method, target, body)

    return Stub({"DynamoDB_20120810": recorded_dynamodb}, ca), Stub({}, ca, recorded_iot)


def call_traces(contenders: list[tuple[str, list[str], int]], snapshot: dict, fleet: Fleet,
                ca: LocalCa, memory_mb: int) -> tuple[dict[str, list[str]], dict[str, object], list[str]]:
    """The calls each contender makes for one activation (a cold one, over
    HTTPS), in the order the stubs received them; each one's answer; and
    what the stubs did not answer."""
    traces, answers = {}, {}
    log = RESULTS / "activation-trace.log"
    log.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        record = Path(tmp) / "calls"
        ddb, iot = stubs(snapshot, fleet, ca, record)
        try:
            env = function_env(ddb, iot, ca, fleet)
            for name, command, _ in contenders:
                record.write_text("")
                try:
                    answers[name] = cold_start(command, env, fleet.event(0), log, memory_mb)["answer"]
                except RuntimeError as e:
                    answers[name] = str(e)
                lines = sorted(record.read_text().splitlines(), key=lambda line: int(line.split(" ", 1)[0]))
                traces[name] = [line.split(" ", 1)[1] for line in lines]
            unanswered = ddb.unanswered() + iot.unanswered()
        finally:
            ddb.close()
            iot.close()
    return traces, answers, unanswered


def measure(contenders: list[tuple[str, list[str], int]], env: dict, transport: str, fleet: Fleet,
            memory_mb: int) -> list[dict]:
    logs = []
    for name, _, _ in contenders:
        log = RESULTS / f"activation-{transport}-{name.split()[0]}.log"
        log.unlink(missing_ok=True)
        logs.append(log)
    colds = interleaved_cold_starts([(command, env, log) for (_, command, _), log in zip(contenders, logs)],
                                    fleet.event(0), memory_mb, COLD)
    rows = []
    for (name, command, size), log, cold in zip(contenders, logs, colds):
        steady = warm(command, env, fleet.event, WARM, log, memory_mb)
        activated = sum(bool(a and a.get("outcome") == "ACTIVATED") for a in cold["answers"] + steady["answers"])
        del cold["answers"], steady["answers"]
        rows.append({"name": name, **cold, **steady, "activated": activated, "invocations_total": COLD + WARM,
                     "size_kib": size / 1024})
    return rows


def main() -> int:
    RESULTS.mkdir(parents=True, exist_ok=True)
    facts = template_facts(ROOT, sys.executable)
    memory = facts["memorySizes"]["device-activation"]
    architecture = facts["parameterDefinitions"]["template.yaml"]["Architecture"]["Default"]
    py_handler = ROOT / "bench/activation/python_activation/handler.py"
    contenders = [("rust (geoprov)", [str(BINARY)], BINARY.stat().st_size),
                  ("python + boto3", [sys.executable, str(py_handler)], py_handler.stat().st_size)]
    fleet = Fleet(DEVICES)
    snapshot = registry_snapshot(fleet.manifest, REGION, TABLE, BINARY.parent / "geoprov")
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ca = LocalCa(Path(tmp))
        traces, answers, unanswered = call_traces(contenders, snapshot, fleet, ca, memory)
        wrong = {name: trace for name, trace in traces.items() if trace != EXPECTED_CALLS}
        if wrong or unanswered:
            print(f"one activation did not make the expected calls {EXPECTED_CALLS}: {wrong};"
                  f" answers: {answers}; unanswered: {unanswered[:3]}; logs: bench/results/activation-trace.log")
            return 1
        for transport in ("https", "http"):
            ddb, iot = stubs(snapshot, fleet, ca if transport == "https" else None)
            try:
                env = function_env(ddb, iot, ca, fleet)
                results[transport] = measure(contenders, env, transport, fleet, memory)
                unanswered = ddb.unanswered() + iot.unanswered()
                if unanswered:
                    print(f"the stub was asked what it does not answer: {unanswered[:3]}")
                    return 1
            finally:
                ddb.close()
                iot.close()

    binary = BINARY.relative_to(ROOT) if BINARY.is_relative_to(ROOT) else BINARY
    print(f"\ndevice activation: Rust ({binary}) vs Python 3 + boto3, instant IoT and DynamoDB stubs on"
          f" 127.0.0.1, {os.cpu_count()} cores; {COLD} cold starts and {WARM} warm activations each;"
          f" {len(EXPECTED_CALLS)} calls, {ROUND_TRIPS} round trips an activation, the same for both")
    print_comparison(results, "activation")
    for transport in ("https", "http"):
        for row in results[transport]:
            print(f"{transport} {row['name']}: activated {row['activated']} of {row['invocations_total']};"
                  f" CPU per warm activation by /proc/<pid>/stat ticks:"
                  f" {row['cpu_per_invocation_ms_from_stat']:.2f} ms")
    print("ratio: python / rust. size: Rust = the binary; Python = handler source (boto3 comes with the"
          " Lambda runtime; cryptography, which it reads the certificate with, would be packaged: not counted)")

    short = [f"{t} {r['name']}" for t in results for r in results[t] if r["activated"] != r["invocations_total"]]
    if short:
        print(f"not every invocation was an activation, so the contenders did not do the same work: {short}")
        return 1

    rust = results["https"][0]
    print(f"\nLambda estimate for the Rust activation over HTTPS ({architecture}): CPU x 1769/MemorySize;"
          f" an activation also waits ~{AWS_WAIT_MS:g} ms on IoT and DynamoDB (assumed: {ROUND_TRIPS} round"
          f" trips; BENCH_AWS_WAIT_MS)")
    estimates = print_estimate(rust, memory, architecture, AWS_WAIT_MS, "activation")
    out = RESULTS / "activation.json"
    out.write_text(json.dumps({"binary": str(binary), "calls": EXPECTED_CALLS, "round_trips": ROUND_TRIPS,
                               "results": results, "lambda_estimate": estimates, "aws_wait_ms": AWS_WAIT_MS,
                               "architecture": architecture, "memory_mb": memory}, indent=2) + "\n")
    print(f"written: {out.relative_to(ROOT)}; function logs: bench/results/activation-*.log")
    return 0


if __name__ == "__main__":
    sys.exit(main())
