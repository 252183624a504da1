"""Cold start and init CPU over HTTPS of a geoprov function (release build),
against instant stubs of the AWS APIs it calls (bench/lambda_bench.py), under
a keep-alive Runtime API emulator; the Lambda estimate at its MemorySize.

    coldstart.py failover   init reads FAILOVER_CONFIG from SSM (ssm:...), then
                            a `status` event: the failover's state (DynamoDB),
                            the records (Route 53) and the alarms (CloudWatch)
    coldstart.py issuer     no AWS call in init; then one CSR: the registry,
                            the ledger (DynamoDB) and ACM PCA (Describe, Issue,
                            GetCertificate; the stub signs the CSR with a CA
                            made at run time)

Per function: BENCH_COLD_STARTS processes (default 15), each spawned, taken
through init and its first invocation, then killed. For the issuer, then one
batch of BENCH_BATCH fresh CSRs (default 200) at ISSUE_CONCURRENCY 8 in one
warm process: its wall time and CPU, which is what decides the issuer's tokio
runtime (current-thread, or multi-thread if a batch needed it). BENCH_BINARY
names another build of the function to compare. Prints tables and writes
bench/results/coldstart-<function>.json.
"""
from __future__ import annotations

import base64
import datetime
import json
import os
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "bench"))
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402
from lambda_bench import (MEMORY_SIZES, LocalCa, Stub, StubError, interleaved_cold_starts,  # noqa: E402
                          warm,
                          dynamodb_answer, lambda_estimate, registry_snapshot,
                          template_facts)
from local_aws import aws_env  # noqa: E402

COLD = int(os.environ.get("BENCH_COLD_STARTS", "15"))
BATCH = int(os.environ.get("BENCH_BATCH", "200"))
RESULTS = ROOT / "bench/results"
REGION = "eu-west-1"
TABLE = "geoprov-bench"
ACCOUNT = "123456789012"


def failover() -> tuple[str, dict, dict, dict]:
    """The failover: its configuration in SSM, its state table empty."""
    regions = ["us-east-1", "eu-west-1"]
    config = {
        "hostedZoneId": "Z0GEOPROVBENCH", "recordName": "global.iot.example.com", "ttl": 60,
        "regions": {r: {"endpoint": f"bench-ats.iot.{r}.amazonaws.com",
                        "healthCheckId": str(uuid.uuid5(uuid.NAMESPACE_DNS, r)),
                        "alarmName": f"geoprov-health-{r}"} for r in regions},
        "locations": [
            {"setIdentifier": "US East IoT Global Endpoint", "geoLocation": {"ContinentCode": "NA"},
             "preference": ["us-east-1", "eu-west-1"]},
            {"setIdentifier": "Default IoT Global Endpoint", "geoLocation": {"CountryCode": "*"},
             "preference": ["eu-west-1", "us-east-1"]},
        ],
        "failAfter": 1, "recoverAfter": 2, "minChangeIntervalSeconds": 900,
    }
    name = "/geoprov/failover"

    def ssm(operation: str, body: dict) -> dict:
        if operation == "GetParameter" and body.get("Name") == name:
            return {"Parameter": {"Name": name, "Type": "String", "Value": json.dumps(config),
                                  "Version": 1, "DataType": "text"}}
        raise StubError("ParameterNotFound", f"SSM {operation} {body.get('Name')}")

    def route53_and_cloudwatch(method: str, path: str, body: bytes):
        if method == "GET" and path.startswith(f"/2013-04-01/hostedzone/{config['hostedZoneId']}/rrset"):
            return 200, (b'<?xml version="1.0" encoding="UTF-8"?>'
                         b'<ListResourceRecordSetsResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/">'
                         b'<ResourceRecordSets/><IsTruncated>false</IsTruncated><MaxItems>300</MaxItems>'
                         b'</ListResourceRecordSetsResponse>'), "text/xml"
        if method == "POST" and b"Action=DescribeAlarms" in body:
            alarms = b"".join(
                b"<member><AlarmName>%s</AlarmName><StateValue>OK</StateValue></member>"
                % f"geoprov-health-{r}".encode() for r in regions)
            xml = (b'<DescribeAlarmsResponse xmlns="http://monitoring.amazonaws.com/doc/2010-08-01/">'
                   b"<DescribeAlarmsResult><MetricAlarms>" + alarms + b"</MetricAlarms>"
                   b"<CompositeAlarms/></DescribeAlarmsResult><ResponseMetadata>"
                   b"<RequestId>geoprov-bench</RequestId></ResponseMetadata></DescribeAlarmsResponse>")
            return 200, xml, "text/xml"
        return None

    answers = {"AmazonSSM": ssm, "DynamoDB_20120810": dynamodb_answer({})}
    env = {"FAILOVER_CONFIG": f"ssm:{name}", "TABLE_NAME": TABLE}
    return "endpoint-failover", answers, env, {"action": "status"}, route53_and_cloudwatch


def issuer(ca_dir: Path) -> tuple[str, dict, dict, dict]:
    """The issuer: one registered device, an empty ledger, and an ACM PCA that
    signs what it is given with a CA made now."""
    event = json.loads((ROOT / "events/cert-issuer/issue.json").read_text())
    serial = event["serialNumber"]
    registry = registry_snapshot([{"serialNumber": serial}] + [{"serialNumber": batch_serial(i)}
                                                               for i in range(BATCH)], REGION, TABLE)
    ca = LocalCa(ca_dir)
    ca_key, ca_cert = ca.ca_key, ca.ca_cert
    ca_arn = f"arn:aws:acm-pca:{REGION}:{ACCOUNT}:certificate-authority/{uuid.uuid4()}"
    issued: dict[str, str] = {}

    def pca(operation: str, body: dict) -> dict:
        if operation == "DescribeCertificateAuthority":
            return {"CertificateAuthority": {
                "Arn": ca_arn, "Status": "ACTIVE", "Type": "SUBORDINATE",
                "CertificateAuthorityConfiguration": {
                    "KeyAlgorithm": "EC_prime256v1", "SigningAlgorithm": "SHA256WITHECDSA",
                    "Subject": {"CommonName": "geoprov bench"}}}}
        if operation == "IssueCertificate":
            csr = x509.load_pem_x509_csr(base64.b64decode(body["Csr"]))
            start = datetime.datetime.now(datetime.timezone.utc)
            cert = (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(ca_cert.subject)
                    .public_key(csr.public_key()).serial_number(x509.random_serial_number())
                    .not_valid_before(start)
                    .not_valid_after(start + datetime.timedelta(days=body["Validity"]["Value"]))
                    .sign(ca_key, hashes.SHA256()))
            arn = f"{ca_arn}/certificate/{uuid.uuid4().hex}"
            issued[arn] = cert.public_bytes(serialization.Encoding.PEM).decode()
            return {"CertificateArn": arn}
        if operation == "GetCertificate" and body.get("CertificateArn") in issued:
            return {"Certificate": issued[body["CertificateArn"]],
                    "CertificateChain": ca.ca_pem.read_text()}
        raise StubError("ValidationException", f"ACM PCA {operation}")

    answers = {"ACMPrivateCA": pca,
               "DynamoDB_20120810": dynamodb_answer(registry)}
    env = {"TABLE_NAME": TABLE, "PCA_ARN": ca_arn, "PCA_REGION": REGION,
           "TRUSTED_CLAIM_CERTIFICATE_IDS": "claim"}
    return "cert-issuer", answers, env, event, None


def batch_serial(i: int) -> str:
    return f"SN-BENCH-{i:05d}"


def csr(serial: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    request = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, serial)]))
               .sign(key, hashes.SHA256()))
    return request.public_bytes(serialization.Encoding.PEM).decode()


def issuer_batch(command: list[str], env: dict, log: Path, memory: int) -> dict:
    """One warm issuer (an empty batch first), then one batch of fresh CSRs
    at ISSUE_CONCURRENCY 8."""
    requests = [{"serialNumber": batch_serial(i), "csrPem": csr(batch_serial(i))} for i in range(BATCH)]
    run = warm(command, env | {"ISSUE_CONCURRENCY": "8"},
               lambda i: {"requests": requests if i else []}, 1, log, memory, warmup=1, chunks=1)
    issued = sum(1 for r in run["answers"][0].get("results", []) if r.get("certificateArn"))
    cpu = run["cpu_per_invocation_ms"]
    return {"batch": BATCH, "batch_wall_s": run["warm_p50_ms"] / 1000, "batch_cpu_ms": cpu,
            "batch_cpu_per_csr_ms": cpu / BATCH, "batch_issued": issued,
            "batch_peak_rss_mib": run["peak_rss_mib"]}


def main(which: str) -> int:
    RESULTS.mkdir(parents=True, exist_ok=True)
    facts = template_facts(ROOT, sys.executable)
    architecture = facts["parameterDefinitions"]["template.yaml"]["Architecture"]["Default"]
    with tempfile.TemporaryDirectory() as tmp:
        tls = LocalCa(Path(tmp) / "tls")
        binary, answers, function_env, event, other = (failover() if which == "failover"
                                                       else issuer(Path(tmp) / "pca"))
        memory = facts["memorySizes"][binary]
        stub = Stub(answers, tls, other)
        try:
            env = aws_env(stub.endpoint, REGION) | function_env | {"AWS_CA_BUNDLE": str(tls.ca_pem)}
            log = RESULTS / f"coldstart-{which}.log"
            log.unlink(missing_ok=True)
            path = Path(os.environ.get("BENCH_BINARY") or ROOT / "target/release" / binary)
            result = interleaved_cold_starts([([str(path)], env, log)], event, memory, COLD)[0]
            if which == "issuer":
                result |= issuer_batch([str(path)], env, log, memory)
            if stub.unanswered():
                print(f"the stub was asked what it does not answer: {stub.unanswered()[:3]}")
                return 1
        finally:
            stub.close()
    answers = result.pop("answers")
    # Every cold start did the whole first invocation, not an error path.
    expected = "certificateArn" if which == "issuer" else "trigger"
    if not all(isinstance(a, dict) and a.get(expected) for a in answers):
        print(f"a first invocation did not answer with {expected}: {answers[:2]}")
        return 1
    if result.get("batch_issued", BATCH) != BATCH:
        print(f"the batch issued {result['batch_issued']} of {BATCH}")
        return 1
    answer = answers[0]
    print(f"\n{binary}: {COLD} cold starts over HTTPS (instant stubs on 127.0.0.1), release, {os.cpu_count()} cores")
    print(f"first answer: {json.dumps(answer)[:160]}")
    print("| measure | p50 | p90 |")
    print("|---|---:|---:|")
    for label, key in [("init: spawn to the first poll of /next (ms)", "init_ms"),
                       ("cold start: spawn to the first answer (ms)", "cold_start_ms"),
                       ("init CPU (ms)", "init_cpu_ms"), ("first-invocation CPU (ms)", "first_cpu_ms")]:
        print(f"| {label} | {result[key]:.2f} | {result[key + '_p90']:.2f} |")
    print(f"| size (KiB) | {path.stat().st_size / 1024:.0f} | |")
    if "batch" in result:
        print(f"\na batch of {result['batch']} fresh P-256 CSRs, ISSUE_CONCURRENCY 8, one warm process:"
              f" {result['batch_wall_s']:.2f} s wall, {result['batch_cpu_ms']:.1f} ms CPU"
              f" ({result['batch_cpu_per_csr_ms']:.2f} ms a CSR), {result['batch_issued']} issued,"
              f" peak RSS {result['batch_peak_rss_mib']:.1f} MiB")
    print(f"\nLambda estimate ({architecture}), CPU x 1769/MemorySize; MemorySize {memory} in the template")
    print("| MemorySize (MB) | init (ms) | first invocation, CPU only (ms) |")
    print("|---|---:|---:|")
    for size in MEMORY_SIZES:
        init = lambda_estimate(result["init_cpu_ms"], size, 0, architecture)
        first = lambda_estimate(result["first_cpu_ms"], size, 0, architecture)
        mark = " (template)" if size == memory else ""
        print(f"| {size}{mark} | {init['wall_ms']:.1f} | {first['wall_ms']:.1f} |")
    out = RESULTS / f"coldstart-{which}.json"
    out.write_text(json.dumps({"binary": binary, "memory_mb": memory, **result,
                               "size_kib": path.stat().st_size / 1024}, indent=2) + "\n")
    print(f"written: {out.relative_to(ROOT)}; function log: {log.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("failover", "issuer"):
        print(__doc__)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
