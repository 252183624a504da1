"""Cold start and init CPU over HTTPS of a geoprov function (release build),
against instant stubs of the AWS APIs it calls (bench/lambda_bench.py), under
a keep-alive Runtime API emulator; the Lambda estimate at its MemorySize.

    coldstart.py failover   init reads FAILOVER_CONFIG from SSM (ssm:...), then
                            a `status` event (the failover's state in DynamoDB)
    coldstart.py issuer     no AWS call in init; then one CSR: the registry,
                            the ledger (DynamoDB) and ACM PCA (Describe, Issue,
                            GetCertificate; the stub signs the CSR with a CA
                            made at run time)

Per function: BENCH_COLD_STARTS processes (default 15), each spawned, taken
through init and its first invocation, then killed. Prints a table and writes
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
from lambda_bench import (MEMORY_SIZES, LocalCa, Stub, StubError, cold_starts,  # noqa: E402
                          dynamodb_answer, lambda_estimate, registry_snapshot,
                          template_facts)
from local_aws import aws_env  # noqa: E402

COLD = int(os.environ.get("BENCH_COLD_STARTS", "15"))
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

    answers = {"AmazonSSM": ssm, "DynamoDB_20120810": dynamodb_answer({})}
    env = {"FAILOVER_CONFIG": f"ssm:{name}", "TABLE_NAME": TABLE}
    return "endpoint-failover", answers, env, {"action": "status"}


def issuer(ca_dir: Path) -> tuple[str, dict, dict, dict]:
    """The issuer: one registered device, an empty ledger, and an ACM PCA that
    signs what it is given with a CA made now."""
    event = json.loads((ROOT / "events/cert-issuer/issue.json").read_text())
    serial = event["serialNumber"]
    registry = registry_snapshot([{"serialNumber": serial}], REGION, TABLE)
    ca = LocalCa(ca_dir)
    ca_key = serialization.load_pem_private_key(ca.key_pem.read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.read_bytes())
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
                    "CertificateChain": ca.cert_pem.read_text()}
        raise StubError("ValidationException", f"ACM PCA {operation}")

    answers = {"ACMPrivateCA": pca,
               "DynamoDB_20120810": dynamodb_answer(registry)}
    env = {"TABLE_NAME": TABLE, "PCA_ARN": ca_arn, "PCA_REGION": REGION,
           "TRUSTED_CLAIM_CERTIFICATE_IDS": "claim"}
    return "cert-issuer", answers, env, event


def main(which: str) -> int:
    RESULTS.mkdir(parents=True, exist_ok=True)
    facts = template_facts(ROOT, sys.executable)
    architecture = facts["parameterDefinitions"]["template.yaml"]["Architecture"]["Default"]
    with tempfile.TemporaryDirectory() as tmp:
        tls = LocalCa(Path(tmp) / "tls")
        binary, answers, function_env, event = failover() if which == "failover" else issuer(Path(tmp) / "pca")
        memory = facts["memorySizes"][binary]
        stub = Stub(answers, tls)
        try:
            env = aws_env(stub.endpoint, REGION) | function_env | {"AWS_CA_BUNDLE": str(tls.ca_pem)}
            log = RESULTS / f"coldstart-{which}.log"
            log.unlink(missing_ok=True)
            path = ROOT / "target/release" / binary
            result = cold_starts([str(path)], env, event, log, memory, COLD)
            if stub.unanswered():
                print(f"the stub was asked what it does not answer: {stub.unanswered()[:3]}")
                return 1
        finally:
            stub.close()
    answer = result.pop("answers")[0]
    print(f"\n{binary}: {COLD} cold starts over HTTPS (instant stubs on 127.0.0.1), release, {os.cpu_count()} cores")
    print(f"first answer: {json.dumps(answer)[:160]}")
    print("| measure | p50 | p90 |")
    print("|---|---:|---:|")
    for label, key in [("init: spawn to the first poll of /next (ms)", "init_ms"),
                       ("cold start: spawn to the first answer (ms)", "cold_start_ms"),
                       ("init CPU (ms)", "init_cpu_ms"), ("first-invocation CPU (ms)", "first_cpu_ms")]:
        print(f"| {label} | {result[key]:.2f} | {result[key + '_p90']:.2f} |")
    print(f"| size (KiB) | {path.stat().st_size / 1024:.0f} | |")
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
