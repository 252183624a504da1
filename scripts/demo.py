"""make demo: geoprov's whole control plane on this machine, two regions.

moto plays AWS (us-east-1, eu-west-1, and eu-central-1 for the CA) on
127.0.0.1; the four functions run as Lambda runs them, each behind
cargo-lambda's Runtime API emulator, configured through their environment as
template.yaml configures them; one geoprov-iot-emu per region plays IoT's
data plane (MQTT with mutual TLS, the fleet provisioning API, JITR through the
stack's topic rule), in front of the regional stack's IoT resources made in
moto by local_iot_stack.py.
Devices are `geoprov device`. The scenario:

1. stand up: a geoprov table per region, a hosted zone, each region's health
   alarm and the Route 53 health check on it, the failover's configuration in
   S3 (`geoprov failover config put`), its first reconcile building the record
   tree, a local root CA, and a factory manifest imported with
   `geoprov registry import`;
2. provision: each device resolves the global name by its location with
   `geoprov dns resolve` (the Route 53 answer model over the records moto
   holds, with the health checks' status), connects to the emulator of the
   region it resolved to with the claim, provisions over MQTT (half with keys
   made by IoT, half with CSRs of their factory keys; IoT calls the region's
   hook), then connects with its new certificate; an attacker with the claim
   key tries to provision as others;
3. JITR: devices send CSRs of their own keys (their factory keys, where the
   manifest records one) to the cert issuer; every certificate is verified
   against the CA; the CA is registered in both regions (`geoprov setup ca`)
   and some devices connect with those certificates (dropped once; the
   registration event reaches device-activation, which applies the registry's
   device rules and activates; then they connect);
4. outage: us-east-1 goes down (its emulator refuses connections), and
   Route 53's API with it. Each region's canary (the real region-canary
   binary, one run a "minute") fails to connect; its CanarySuccess 0 goes to
   the region's health alarm, which turns ALARM after 2 of 5 minutes (the
   template's default window), and the Route 53 health check reads the
   alarm. The failover cannot write a record, yet North America resolves to
   eu-west-1 through health alone (the data plane), and a new wave of North
   American devices provisions there. When the API is back, the failover
   takes us-east-1 out of the chains;
5. recovery: us-east-1 serves again; the canary succeeds, and the alarm is
   OK only after 4 good minutes in a row (N-M+1); the failover holds it out
   for the failback interval, then puts it back;
6. drain: an operator drains eu-west-1, then undrains it.

Every decision is checked against what the manifest says it must be, and the
summary counts things per region as moto's IoT holds them. Prints a summary
table, writes a JSON report, and exits non-zero on any mismatch.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import boto3
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from local_aws import ROOT, Processes, aws_env, function_env, invoke, start_moto, start_runtime_emulator
import local_aws
import urllib.request

REGIONS = ("us-east-1", "eu-west-1")
PCA_REGION = "eu-central-1"
ZONE = "example.com"
RECORD = f"global.iot.{ZONE}"
TABLE = "geoprov"
NA_COUNTRIES = ("US", "CA", "MX")
EU_COUNTRIES = ("DE", "FR", "IE", "ES")
# The functions' names in the emulators' configuration (template.yaml's
# logical ids, as local_iot_stack.py names functions).
HOOK_FUNCTION = "PreProvisioningHookFunction"
ACTIVATION_FUNCTION = "DeviceActivationFunction"
# The template's default HealthAlarmWindow, 2-of-5: the canary's window (N)
# and the alarm's threshold on its failures (M).
CANARY_WINDOW = (2, 5)
DEVICES_DIR = ROOT / "target/demo-devices"
CLAIM_DIR = ROOT / "target/demo-claim"


def endpoint(region: str) -> str:
    return f"demo-ats.iot.{region}.amazonaws.com"


class Progress:
    """A one-line progress bar on stderr."""

    def __init__(self, label: str, total: int):
        self.label, self.total, self.done, self.started = label, total, 0, time.monotonic()

    def step(self) -> None:
        self.done += 1
        width = 30
        filled = width * self.done // max(self.total, 1)
        sys.stderr.write(f"\r  {self.label:<28} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}")
        if self.done == self.total:
            sys.stderr.write(f"  {time.monotonic() - self.started:.1f} s\n")
        sys.stderr.flush()


# ---- devices -------------------------------------------------------------------

def new_key():
    return ec.generate_private_key(ec.SECP256R1())


def spki_sha256(key) -> str:
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def manifest(devices: int, rng: random.Random) -> list[dict]:
    """The factory manifest, with what each device is, where it is, and what
    must happen to it. Each kind has at least one device."""
    kinds = ["na", "na", "na", "eu-pinned", "eu-pinned", "na-blocked", "eu-blocked",
             "factory-key", "factory-key-mismatch", "na-late"]
    out = []
    for i in range(devices):
        kind = kinds[i % len(kinds)]
        serial = f"SN-{kind.upper().replace('-', '')[:6]}-{i:04d}"
        na = kind.startswith("na") or kind.startswith("factory")
        device = {
            "serialNumber": serial,
            "kind": kind,
            "country": rng.choice(NA_COUNTRIES if na else EU_COUNTRIES),
            "key": new_key(),
            "profile": {"serialNumber": serial, "status": "BLOCKED" if "blocked" in kind else "ALLOWED",
                        "attributes": {"model": "X1", "firmware": "1.4.2"}},
        }
        if kind.startswith("eu"):
            device["profile"]["allowedRegions"] = ["eu-west-1"]
        # Half the devices provision with a CSR of their factory key, which
        # the manifest records and the hook checks; the others take a key
        # made by IoT, which no factory can record.
        device["csr"] = kind.startswith("factory") or i % 2 == 0
        if device["csr"]:
            device["profile"]["publicKeySha256"] = spki_sha256(device["key"])
        if kind == "factory-key-mismatch":
            device["key"] = new_key()  # the device presents another key
        out.append(device)
    return out


def expected_reason(device: dict, region: str) -> str:
    kind = device["kind"]
    if "blocked" in kind:
        return "DEVICE_BLOCKED"
    if kind == "factory-key-mismatch":
        return "KEY_MISMATCH"
    if kind.startswith("eu") and region != "eu-west-1":
        return "REGION_NOT_ALLOWED"
    return "ALLOWED"


FAILBACK_SECONDS = 3
# The provisioning client id is this prefix and the serial (the hook's default).
PROVISIONING_PREFIX = "prov-"


def now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# ---- the scenario -------------------------------------------------------------------

class Demo:
    def __init__(self, args):
        self.args = args
        self.failures: list[str] = []
        self.report: dict = {"devices": {}, "dns": [], "certificates": {}, "canary": {}}
        self.rng = random.Random(args.seed)

    def expect(self, ok: bool, what: str) -> None:
        if not ok:
            self.failures.append(what)

    def binary(self, name: str) -> str:
        return str(ROOT / "target" / self.args.profile / name)

    def start_function(self, procs, binary: str, env: dict, log_name: str | None = None) -> int:
        """The binary behind an emulator of its own; its log in target/demo-<name>.log."""
        port = start_runtime_emulator(procs)
        log = open(ROOT / f"target/demo-{log_name or binary}.log", "w")
        procs.start([self.binary(binary)], env=env | function_env(port), stdout=log, stderr=log)
        return port

    def run(self) -> int:
        local_aws.GEOPROV = Path(self.binary("geoprov"))
        with Processes() as procs:
            moto = start_moto(procs)
            print(f"moto on {moto}; functions from target/{self.args.profile}")
            self.stand_up(procs, moto)
            devices = manifest(self.args.devices, self.rng)
            self.import_manifest(moto, devices)
            first = [d for d in devices if d["kind"] != "na-late"]
            late = [d for d in devices if d["kind"] == "na-late"]

            print("\n2. provisioning, each device in the region its location resolves to")
            self.provision(first, "wave 1")
            self.attacker(first)
            print("\n3. JITR: CSRs to the cert issuer")
            self.jitr([d for d in first if self.report["devices"][d["serialNumber"]]["reason"] == "ALLOWED"])
            print("\n4. outage: us-east-1 down, and Route 53's API with it")
            self.set_faults("us-east-1", {"refuseConnections": True})
            self.report["canary"]["outage"] = self.canary_until({"us-east-1": "UNHEALTHY"})
            self.expect(len(self.report["canary"]["outage"]) == CANARY_WINDOW[0],
                        f"unhealthy after {len(self.report['canary']['outage'])} bad minutes, not M")
            self.dns_step("ALARM us-east-1", self.failover_without_api, self.alarm_event("us-east-1", "ALARM"),
                          via="data plane", expect=("eu-west-1", "eu-west-1"), api_down=True)
            self.provision(late, "wave 2 (NA, during outage)")
            self.expect(all(self.report["devices"][d["serialNumber"]]["region"] == "eu-west-1" for d in late),
                        "a device of wave 2 did not land in eu-west-1")
            self.dns_step("API back: schedule", self.failover, self.schedule_event(),
                          via="control plane", expect=("eu-west-1", "eu-west-1"))

            print("\n5. recovery: us-east-1 healthy again")
            self.set_faults("us-east-1", {"refuseConnections": False})
            self.report["canary"]["recovery"] = self.canary_until({"us-east-1": "HEALTHY"})
            self.expect(len(self.report["canary"]["recovery"]) == CANARY_WINDOW[1] - CANARY_WINDOW[0] + 1,
                        f"healthy after {len(self.report['canary']['recovery'])} good minutes, not N - M + 1")
            self.dns_step("OK us-east-1 (1 of 2)", self.failover, self.alarm_event("us-east-1", "OK"),
                          via="control plane", expect=("eu-west-1", "eu-west-1"))
            self.dns_step("OK us-east-1 (2 of 2)", self.failover, self.alarm_event("us-east-1", "OK"),
                          via="control plane", expect=("eu-west-1", "eu-west-1"))
            time.sleep(FAILBACK_SECONDS)
            self.dns_step(f"schedule, {FAILBACK_SECONDS} s later", self.failover, self.schedule_event(),
                          via="control plane", expect=("us-east-1", "eu-west-1"))

            print("\n6. drain: eu-west-1 out of service, then back")
            self.dns_step("drain eu-west-1", self.failover, {"action": "drain", "region": "eu-west-1"},
                          via="control plane", expect=("us-east-1", "us-east-1"))
            self.dns_step("undrain eu-west-1", self.failover, {"action": "undrain", "region": "eu-west-1"},
                          via="control plane", expect=("us-east-1", "eu-west-1"))
            self.count_things()
        eu_in_us = [s for s, d in self.report["devices"].items()
                    if d["kind"].startswith("eu") and d["region"] == "us-east-1" and d["allowed"]]
        self.expect(not eu_in_us, f"EU-pinned devices provisioned in us-east-1: {eu_in_us}")
        return self.summary()

    def stand_up(self, procs, moto: str) -> None:
        print("\n1. standing up both regions")
        self.env = {r: aws_env(moto, r) | {"TABLE_NAME": TABLE} for r in REGIONS}
        for region in REGIONS:
            local_aws.geoprov(self.env[region], "registry", "create-table")
        self.route53 = boto3.client("route53", endpoint_url=moto, region_name="us-east-1",
                                    aws_access_key_id="testing", aws_secret_access_key="testing")
        self.dynamodb = {r: boto3.client("dynamodb", endpoint_url=moto, region_name=r, aws_access_key_id="testing",
                                         aws_secret_access_key="testing") for r in REGIONS}
        zone = self.route53.create_hosted_zone(Name=ZONE, CallerReference=f"demo-{time.time()}")
        self.zone_id = zone["HostedZone"]["Id"].split("/")[-1]
        # Each region's health alarm as the template makes it (1 of 1 on the
        # canary's CanaryFailuresInWindow, which Route 53 can evaluate), and
        # the Route 53 health check on it, which copies its settings.
        self.alarm_state = {r: "INSUFFICIENT_DATA" for r in REGIONS}
        self.cloudwatch = {r: boto3.client("cloudwatch", endpoint_url=moto, region_name=r,
                                           aws_access_key_id="testing", aws_secret_access_key="testing")
                           for r in REGIONS}
        for region in REGIONS:
            self.cloudwatch[region].put_metric_alarm(
                AlarmName=f"geoprov-health-{region}", Namespace="geoprov", MetricName="CanaryFailuresInWindow",
                Dimensions=[{"Name": "Region", "Value": region}], Statistic="Maximum", Period=60,
                EvaluationPeriods=1, DatapointsToAlarm=1, Threshold=CANARY_WINDOW[0],
                ComparisonOperator="GreaterThanOrEqualToThreshold", TreatMissingData="breaching")
        self.checks = {r: self.route53.create_health_check(
            CallerReference=f"{r}-{time.time()}",
            HealthCheckConfig={"Type": "CLOUDWATCH_METRIC", "InsufficientDataHealthStatus": "Unhealthy",
                               "AlarmIdentifier": {"Region": r, "Name": f"geoprov-health-{r}"}},
        )["HealthCheck"]["Id"] for r in REGIONS}
        # The canaries' clock: one scheduled run a simulated minute, from two
        # hours ago (CloudWatch takes datapoints of the past).
        self.minute = int(time.time()) // 60 - 120
        self.health = {r: "UNHEALTHY" for r in REGIONS}
        self.tree_built = False
        config = {
            "hostedZoneId": self.zone_id, "recordName": RECORD, "ttl": 60,
            "regions": {r: {"endpoint": endpoint(r), "healthCheckId": self.checks[r],
                            "alarmName": f"geoprov-health-{r}"} for r in REGIONS},
            "locations": [
                {"setIdentifier": "US East IoT Global Endpoint", "geoLocation": {"ContinentCode": "NA"},
                 "preference": ["us-east-1", "eu-west-1"]},
                {"setIdentifier": "Default IoT Global Endpoint", "geoLocation": {"CountryCode": "*"},
                 "preference": ["eu-west-1", "us-east-1"]},
            ],
            "failAfter": 1, "recoverAfter": 2, "minChangeIntervalSeconds": FAILBACK_SECONDS,
        }
        # The configuration by reference, as the global stack gives it.
        s3 = boto3.client("s3", endpoint_url=moto, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
        s3.create_bucket(Bucket="geoprov-demo-config")
        config_path = ROOT / "target/demo-failover-config.json"
        config_path.write_text(json.dumps(config, indent=2))
        self.config_path = config_path
        # What is deployed is what Route 53 can evaluate, and its copies are
        # current: the check an operator runs after every regional deploy.
        checked = local_aws.geoprov(self.env["us-east-1"], "failover", "check-health", "--config", str(config_path))
        self.expect(checked["findings"] == [], f"check-health: {checked['findings']}")
        print(f"  check-health: {checked['regions']} regions, no finding")
        source = "s3://geoprov-demo-config/failover.json"
        # Each region's domain configuration of the global name, as the
        # regional stack makes it with ServerCertificateArn: put refuses a
        # region without one.
        for r in REGIONS:
            boto3.client("iot", endpoint_url=moto, region_name=r, aws_access_key_id="testing",
                         aws_secret_access_key="testing").create_domain_configuration(
                domainConfigurationName="geoprov-global", domainName=RECORD, serviceType="DATA",
                serverCertificateArns=[f"arn:aws:acm:{r}:123456789012:certificate/geoprov-global"])
        local_aws.geoprov(self.env["us-east-1"], "failover", "config", "put", str(config_path), "--to", source)
        failover_env = self.env["us-east-1"] | {"FAILOVER_CONFIG": source, "INSYNC_TIMEOUT_SECONDS": "10",
                                                # the stack's account (moto's): the bucket's expected owner
                                                "CONFIG_BUCKET_OWNER": "123456789012"}
        self.failover = self.start_function(procs, "endpoint-failover", failover_env)
        # The same function, state and alarms, with Route 53's API unreachable.
        closed = f"http://127.0.0.1:{local_aws.free_port()}"
        self.failover_without_api = self.start_function(
            procs, "endpoint-failover", failover_env | {"AWS_ENDPOINT_URL_ROUTE_53": closed},
            log_name="endpoint-failover-no-route53-api")

        ca = local_aws.geoprov(aws_env(moto, PCA_REGION), "pca", "create-local-ca")
        self.ca_pem = ca["certificatePem"]
        # Its IoT id (the SHA-256 of its DER), as `geoprov setup ca` prints it.
        self.ca_id = hashlib.sha256(x509.load_pem_x509_certificate(self.ca_pem.encode())
                                    .public_bytes(serialization.Encoding.DER)).hexdigest()
        print(f"  local root CA in {PCA_REGION}: {ca['certificateAuthorityArn'].rsplit('/', 1)[1]}")
        # The claim: one certificate, registered in both regions.
        shutil.rmtree(CLAIM_DIR, ignore_errors=True)
        shutil.rmtree(DEVICES_DIR, ignore_errors=True)
        DEVICES_DIR.mkdir(parents=True)
        local_aws.geoprov(self.env["us-east-1"], "setup", "claim", "--regions", ",".join(REGIONS),
                          "--out-dir", str(CLAIM_DIR))
        claim = x509.load_pem_x509_certificate((CLAIM_DIR / "claim.pem").read_bytes())
        self.claim_id = hashlib.sha256(claim.public_bytes(serialization.Encoding.DER)).hexdigest()
        self.pca_arn = ca["certificateAuthorityArn"]
        # REQUIRE_FACTORY_KEY false: a key IoT makes cannot be on record; a
        # recorded key is still checked.
        self.hooks = {r: self.start_function(procs, "pre-provisioning-hook", self.env[r] | {
            "TRUSTED_CLAIM_CERTIFICATE_IDS": self.claim_id, "HOOK_DEADLINE_MS": "4000",
            "LAMBDA_TIMEOUT_MS": "5000", "DEFAULT_MAX_PROVISIONS": "3", "REQUIRE_FACTORY_KEY": "false",
            "CANARY_SERIAL": f"geoprov-canary-{r}-probe"},
            log_name=f"pre-provisioning-hook-{r}") for r in REGIONS}
        self.issuer = self.start_function(procs, "cert-issuer", self.env["eu-west-1"] | {
            "PCA_ARN": ca["certificateAuthorityArn"], "PCA_REGION": PCA_REGION,
            "MAX_VALIDITY_DAYS": "365", "DEFAULT_VALIDITY_DAYS": "365"})
        # JITR, as the hook: the same device rules and REQUIRE_FACTORY_KEY.
        self.activations = {r: self.start_function(procs, "device-activation", self.env[r] | {
            "DEVICE_POLICY_NAME": "geoprov-DevicePolicy", "THING_TYPE_NAME": "geoprov-device",
            "DEFAULT_THING_GROUP": "geoprov-devices", "DEFAULT_MAX_PROVISIONS": "3",
            "REQUIRE_FACTORY_KEY": "false", "FLEET_CA_CERTIFICATE_IDS": self.ca_id},
            log_name=f"device-activation-{r}") for r in REGIONS}
        self.emulators = {r: self.start_emulator(procs, moto, r) for r in REGIONS}
        self.iot = {r: boto3.client("iot", endpoint_url=moto, region_name=r, aws_access_key_id="testing",
                                    aws_secret_access_key="testing") for r in REGIONS}
        self.start_canaries(procs)
        # The failover's first reconcile, once the canaries have shown both
        # regions healthy: it builds the record tree.
        self.dns_step("first reconcile", self.failover, {"action": "reconcile"}, via="control plane",
                      expect=("us-east-1", "eu-west-1"))
        self.tree_built = True
        tree = self.route53.list_resource_record_sets(HostedZoneId=self.zone_id)["ResourceRecordSets"]
        print(f"  hosted zone {ZONE}: {sum(r['Name'].rstrip('.').endswith(RECORD) for r in tree)} records "
              f"in the tree under {RECORD}, every step a PRIMARY and SECONDARY pair")

    def start_canaries(self, procs) -> None:
        """`geoprov setup canary` in each region (its emulator's server CA as
        the CA devices ship, the claim for the provisioning probe), and the
        real region-canary binary per region."""
        self.canaries = {}
        for r in REGIONS:
            local_aws.geoprov(self.env[r], "setup", "canary", "--regions", r, "--server-ca-file",
                              self.emulators[r]["ca"], "--claim-dir", str(CLAIM_DIR))
            self.canaries[r] = self.start_function(procs, "region-canary", self.env[r] | {
                "CANARY_SERVER_NAME": RECORD, "CANARY_ENDPOINT": self.emulators[r]["mqtt"],
                "CANARY_BUDGET_MS": "5000", "CANARY_PROVISIONING": "true", "CANARY_TEMPLATE_NAME": "geoprov-fleet",
                "CANARY_SERIAL": f"geoprov-canary-{r}-probe", "PROVISIONING_CLIENT_ID_PREFIX": "prov-",
                "CANARY_WINDOW": str(CANARY_WINDOW[1])},
                log_name=f"region-canary-{r}")
        # A new window: every minute before the first run counts as failed,
        # so each region proves N - M + 1 good minutes before it is healthy.
        minutes = self.canary_until({r: "HEALTHY" for r in REGIONS})
        self.expect(len(minutes) == CANARY_WINDOW[1] - CANARY_WINDOW[0] + 1,
                    f"the regions took {len(minutes)} canary minutes to become healthy")
        self.report["canary"]["standUp"] = minutes

    @property
    def down(self) -> set[str]:
        """The regions whose Route 53 health check is unhealthy, as Route 53
        computes it from the canary's datapoints (`geoprov failover health`)."""
        return {r for r in REGIONS if self.health[r] == "UNHEALTHY"}

    def canary_minute(self) -> dict:
        """One simulated minute: each region's canary runs once for it, and
        CloudWatch files its datapoint. moto extracts no metric from a log,
        so the demo puts the line's CanaryFailuresInWindow at the line's
        minute. Then, at the end of the minute, each health check's status
        as Route 53 computes it (`geoprov failover health`, the evaluator on
        moto's datapoints and the settings the check copied), and the alarm
        state the failover reads: a 1-of-1 alarm whose data is breaching
        (>= M) or missing is ALARM, which moto does not evaluate, so the
        demo sets it. The two must agree (the invariant the evaluator's
        proptests prove); the demo checks it every minute."""
        minute = {"minute": self.minute, "regions": {}}
        for region in REGIONS:
            report = invoke(self.canaries[region], self.schedule_event(self.minute))
            window = report.get("window", {})
            failures = window.get("failures")
            if failures is not None:
                self.cloudwatch[region].put_metric_data(Namespace="geoprov", MetricData=[{
                    "MetricName": "CanaryFailuresInWindow", "Dimensions": [{"Name": "Region", "Value": region}],
                    "Value": failures, "Unit": "Count", "Timestamp": self.minute * 60 + 1}])
            state = "ALARM" if failures is None or failures >= CANARY_WINDOW[0] else "OK"
            if state != self.alarm_state[region]:
                self.set_alarm(region, state)
            minute["regions"][region] = {"success": bool(report.get("success")),
                                         "failedStep": report.get("failedStep"),
                                         "failuresInWindow": failures, "alarm": state}
        self.minute += 1
        health = local_aws.geoprov(self.env["us-east-1"], "failover", "health", "--config", str(self.config_path),
                                   "--at", str(self.minute * 60))
        for region in REGIONS:
            self.health[region] = health["regions"][region]["status"]
            minute["regions"][region]["health"] = self.health[region]
            agree = (self.health[region] == "UNHEALTHY") == (self.alarm_state[region] == "ALARM")
            self.expect(agree, f"minute {self.minute}: {region}'s alarm {self.alarm_state[region]} "
                               f"and its health check {self.health[region]} disagree")
        if self.tree_built:
            minute["northAmerica"], minute["europe"] = self.resolve("US"), self.resolve("DE")
        answers = (f"; NA -> {minute['northAmerica']}, EU -> {minute['europe']}" if self.tree_built
                   else "; no record tree yet")
        cells = "; ".join(
            f"{r}: {'ok' if v['success'] else 'failed at ' + str(v['failedStep'])}, "
            f"{v['failuresInWindow']} of {CANARY_WINDOW[1]} failed -> {v['health'].lower()}"
            for r, v in minute["regions"].items())
        print(f"  minute {self.minute - 1}: {cells}{answers}")
        return minute

    def canary_until(self, wanted: dict[str, str]) -> list[dict]:
        """Canary minutes until each region's health check is as `wanted`."""
        minutes = []
        while any(self.health[r] != w for r, w in wanted.items()) and len(minutes) < 2 * CANARY_WINDOW[1]:
            minutes.append(self.canary_minute())
        self.expect(all(self.health[r] == w for r, w in wanted.items()),
                    f"the health checks never became {wanted}: {self.health}")
        return minutes

    def start_emulator(self, procs, moto: str, region: str) -> dict:
        """The regional stack's IoT resources in moto, and geoprov-iot-emu in
        front of them, its pre-provisioning hook and its JITR rule's function
        the region's."""
        config = ROOT / f"target/demo-emulator-{region}.json"
        made = subprocess.run(
            [sys.executable, str(ROOT / "scripts/local_iot_stack.py"), "--endpoint", moto, "--region", region,
             "--out", str(config), "--parameter", f"ClaimCertificateId={self.claim_id}",
             "--parameter", f"PcaArn={self.pca_arn}"],
            env=aws_env(moto, region), check=True, capture_output=True, text=True)
        ca = ROOT / f"target/demo-server-ca-{region}.pem"
        log = open(ROOT / f"target/demo-emulator-{region}.log", "w")
        proc = procs.start(
            [self.binary("geoprov-iot-emu"), "--region", region, "--domain", RECORD, "--config", str(config),
             "--server-ca-out", str(ca),
             "--lambda", f"{HOOK_FUNCTION}=http://127.0.0.1:{self.hooks[region]}/2015-03-31/functions/_/invocations",
             "--lambda",
             f"{ACTIVATION_FUNCTION}=http://127.0.0.1:{self.activations[region]}/2015-03-31/functions/_/invocations"],
            env=aws_env(moto, region), stdout=subprocess.PIPE, stderr=log, text=True)
        ready = json.loads(proc.stdout.readline())
        print(f"  {region}: geoprov-iot-emu on {ready['mqtt']} (SNI {RECORD}); stack IoT resources "
              f"{json.loads(made.stdout)}")
        return {"mqtt": ready["mqtt"], "admin": ready["admin"], "ca": str(ca)}

    def set_faults(self, region: str, faults: dict) -> None:
        req = urllib.request.Request(f"http://{self.emulators[region]['admin']}/faults",
                                     data=json.dumps(faults).encode(), method="PUT")
        with urllib.request.urlopen(req, timeout=10):
            pass

    def device_cli(self, region: str, *args: str) -> tuple[bool, dict | str]:
        """`geoprov device ...` against the emulator of `region`: (ok, JSON or the error)."""
        emulator = self.emulators[region]
        out = subprocess.run(
            [str(local_aws.GEOPROV), "device", *args[:1], "--endpoint", RECORD, "--connect-to", emulator["mqtt"],
             "--ca-file", emulator["ca"], *args[1:]],
            env=self.env[region], cwd=ROOT, capture_output=True, text=True, timeout=120)
        if out.returncode == 0:
            return True, json.loads(out.stdout)
        return False, out.stderr.strip()

    def import_manifest(self, moto: str, devices: list[dict]) -> None:
        path = ROOT / "target/demo-manifest.jsonl"
        path.write_text("".join(json.dumps(d["profile"]) + "\n" for d in devices))
        for region in REGIONS:
            local_aws.geoprov(self.env[region], "registry", "import", "--regions", region, str(path))
        counts = Counter(d["kind"] for d in devices)
        print(f"  manifest of {len(devices)} devices imported into both tables: "
              + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))

    def resolve(self, country: str | None) -> str:
        """The region a resolver in `country` (None: an unplaced address) gets
        now: `geoprov dns resolve` over moto's records, the health checks of
        the regions that are down unhealthy."""
        args = ["dns", "resolve", "--zone-id", self.zone_id, "--name", RECORD]
        if country:
            args += ["--country", country]
        for region in sorted(self.down):
            args += ["--unhealthy", self.checks[region]]
        answer = local_aws.geoprov(self.env["us-east-1"], *args)["answer"]
        return next((r for r in REGIONS if answer and endpoint(r) == answer.rstrip(".")), f"(no answer: {answer})")

    def factory_key_file(self, serial: str, key) -> str:
        path = DEVICES_DIR / f"{serial}.factory.key"
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        return str(path)

    def provision_one(self, device: dict, region: str) -> dict:
        serial = device["serialNumber"]
        args = ["provision", "--claim-cert", str(CLAIM_DIR / "claim.pem"), "--claim-key", str(CLAIM_DIR / "claim.key"),
                "--serial", serial, "--out-dir", str(DEVICES_DIR)]
        if device["csr"]:
            args += ["--csr", "--key", self.factory_key_file(serial, device["key"])]
        ok, out = self.device_cli(region, *args)
        result = {"allowed": ok, "connected": None}
        if ok:
            # The device's first connection with its own certificate.
            connected, report = self.device_cli(region, "connect", "--cert", out["certificateFile"],
                                                "--key", out["keyFile"], "--client-id", out["thingName"])
            result["connected"] = connected and report.get("receive") == "allowed"
            result["certificateId"] = out["certificateId"]
        else:
            result["error"] = out
        return result

    def provision(self, devices: list[dict], label: str) -> None:
        answers = {c: self.resolve(c) for c in sorted({d["country"] for d in devices})}
        progress = Progress(label, len(devices))
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            futures = {pool.submit(self.provision_one, d, answers[d["country"]]): d for d in devices}
            for future in concurrent.futures.as_completed(futures):
                device = futures[future]
                serial = device["serialNumber"]
                region = answers[device["country"]]
                result = future.result()
                reason = self.audit_reason(region, serial)
                expected = expected_reason(device, region)
                self.expect(reason == expected, f"{serial} in {region}: {reason}, expected {expected}")
                self.expect(result["allowed"] == (expected == "ALLOWED"), f"{serial}: {result}")
                if result["allowed"]:
                    self.expect(result["connected"] is True, f"{serial}: provisioned but could not use its topics")
                self.report["devices"][serial] = {"kind": device["kind"], "country": device["country"],
                                                  "region": region, "csr": device["csr"],
                                                  "allowed": result["allowed"], "connected": result["connected"],
                                                  "reason": reason, "expected": expected}
                progress.step()

    def audit_reason(self, region: str, serial: str) -> str:
        """The device's latest audit event's reason."""
        items = self.dynamodb[region].query(
            TableName=TABLE, KeyConditionExpression="pk = :pk AND begins_with(sk, :a)",
            ExpressionAttributeValues={":pk": {"S": f"AUDIT#DEVICE#{serial}"}, ":a": {"S": "AUDIT#"}})["Items"]
        return items[-1]["reason"]["S"] if items else "(no audit event)"

    def attacker(self, devices: list[dict]) -> None:
        """Someone who extracted the claim key from one device tries to
        provision as others, over MQTT like any device."""
        victim = next(d for d in devices if d["kind"] == "factory-key")["serialNumber"]
        # The attacker's own device took a key made by IoT: no factory key on
        # record, so the client-id rule is the one that must refuse.
        own = next(d for d in devices if d["kind"] == "na" and not d["csr"]
                   and self.report["devices"][d["serialNumber"]]["allowed"])
        region = "us-east-1"
        attacker_key = self.factory_key_file("attacker", new_key())

        def attempt(label: str, serial: str, *extra: str) -> None:
            ok, out = self.device_cli(region, "provision", "--claim-cert", str(CLAIM_DIR / "claim.pem"),
                                      "--claim-key", str(CLAIM_DIR / "claim.key"), "--serial", serial,
                                      "--out-dir", str(DEVICES_DIR / "attacker"), *extra)
            refused_at_connect = not ok and "without a CONNACK" in str(out)
            reason = "CONNECT refused by the claim policy" if refused_at_connect else self.audit_reason(region, serial)
            self.expect(not ok, f"attacker: {label} was allowed")
            self.report["attacker"].append({"attempt": label, "allowed": ok, "reason": reason})

        print("  an attacker with the claim key:")
        self.report["attacker"] = []
        attempt(f"provision {victim} with its own key", victim, "--csr", "--key", attacker_key)
        attempt("pick the thing group fleet-admins", own["serialNumber"], "--parameter", "ThingGroupName=fleet-admins")
        attempt(f"provision as prov-{victim}, serial {own['serialNumber']}", own["serialNumber"],
                "--client-id", PROVISIONING_PREFIX + victim)
        attempt(f"connect with {victim}'s own client id", own["serialNumber"], "--client-id", victim)
        for step in self.report["attacker"]:
            print(f"    {step['attempt']:<45} {'ALLOWED' if step['allowed'] else 'refused'}: {step['reason']}")

    def jitr(self, devices: list[dict]) -> None:
        chosen = devices[: self.args.jitr]
        requests, keys = [], {}
        for device in chosen:
            # The issuer binds a recorded factory key: a device asks with it.
            key = device["key"] if "publicKeySha256" in device["profile"] else new_key()
            keys[device["serialNumber"]] = key
            csr = (x509.CertificateSigningRequestBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device["serialNumber"])]))
                   .sign(key, hashes.SHA256()))
            requests.append({"serialNumber": device["serialNumber"], "validityDays": 90,
                             "csrPem": csr.public_bytes(serialization.Encoding.PEM).decode()})
        started = time.monotonic()
        results = invoke(self.issuer, {"requests": requests}, timeout=600)["results"]
        elapsed = time.monotonic() - started
        ca = x509.load_pem_x509_certificate(self.ca_pem.encode())
        verified = 0
        progress = Progress("verify certificates", len(results))
        for request, result in zip(requests, results):
            serial = request["serialNumber"]
            ok = "certificatePem" in result
            if ok:
                cert = x509.load_pem_x509_certificate(result["certificatePem"].encode())
                try:
                    cert.verify_directly_issued_by(ca)
                    ok = (cert.public_key().public_numbers() == keys[serial].public_key().public_numbers()
                          and cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == serial)
                except Exception:  # noqa: BLE001 - any verification failure is a mismatch
                    ok = False
            verified += ok
            self.expect(ok, f"{serial}: no certificate verified against the CA: {result.get('error')}")
            progress.step()
        self.report["certificates"] = {"requested": len(requests), "issued": sum("certificatePem" in r for r in results),
                                       "verified": verified, "batchSeconds": round(elapsed, 2)}

        # The CA in both regions, auto-registration and no template (JITR);
        # then devices connect with their issued certificates.
        setup = local_aws.geoprov(self.env["us-east-1"], "setup", "ca", "--pca-arn", self.pca_arn,
                                  "--pca-region", PCA_REGION, "--regions", ",".join(REGIONS))
        print(f"  CA registered for JITR: {setup}")
        connections = []
        for device, request, result in list(zip(chosen, requests, results))[: self.args.jitr_connect]:
            serial = device["serialNumber"]
            if "certificatePem" not in result:
                continue
            certificate = DEVICES_DIR / f"{serial}.jitr.pem"
            certificate.write_text(result["certificatePem"])
            key = self.factory_key_file(f"{serial}.jitr", keys[serial])
            region = self.resolve(device["country"])
            ok, report = self.device_cli(region, "connect", "--cert", str(certificate), "--key", key,
                                         "--client-id", serial, "--attempts", "8")
            connected = ok and report.get("receive") == "allowed" and report.get("attempts", 0) >= 2
            self.expect(connected, f"{serial}: JITR connection in {region}: {report}")
            connections.append({"serial": serial, "region": region, "connected": connected,
                                "attempts": report.get("attempts") if ok else None})
        self.report["jitrConnections"] = connections
        print(f"  JITR: {sum(c['connected'] for c in connections)} of {len(connections)} devices connected "
              f"with issued certificates (each dropped once, then activated by device-activation)")

    def set_alarm(self, region: str, state: str) -> None:
        self.alarm_state[region] = state
        self.cloudwatch[region].set_alarm_state(AlarmName=f"geoprov-health-{region}", StateValue=state,
                                                StateReason="geoprov demo")

    def alarm_event(self, region: str, state: str) -> dict:
        return {"version": "0", "id": f"demo-{state}-{time.time()}", "detail-type": "CloudWatch Alarm State Change",
                "source": "aws.cloudwatch", "account": "123456789012", "time": now_rfc3339(),
                "region": region, "resources": [],
                "detail": {"alarmName": f"geoprov-health-{region}", "state": {"value": state},
                           "previousState": {"value": "OK" if state == "ALARM" else "ALARM"}}}

    def schedule_event(self, minute: int | None = None) -> dict:
        at = now_rfc3339() if minute is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(minute * 60))
        return {"version": "0", "id": f"demo-schedule-{time.time()}", "detail-type": "Scheduled Event",
                "source": "aws.events", "account": "123456789012", "time": at,
                "region": "us-east-1", "resources": [], "detail": {}}

    def dns_step(self, what: str, failover: int, event: dict, via: str, expect: tuple[str, str],
                 api_down: bool = False) -> None:
        """One failover invocation, then what North America and an EU country resolve to."""
        started = time.monotonic()
        report = invoke(failover, event)
        seconds = time.monotonic() - started
        errors = [e["code"] for e in report.get("errors", [])]
        if api_down:
            self.expect("ROUTE53_FAILED" in errors and not report.get("applied"),
                        f"{what}: with Route 53's API down the failover must report ROUTE53_FAILED: {errors}")
        else:
            self.expect(not errors, f"{what}: failover errors {report.get('errors')}")
        na, eu = self.resolve("US"), self.resolve("DE")
        held = [d["region"] for d in report.get("deferred", [])]
        note = f"; held out until stable: {', '.join(held)}" if held else ""
        print(f"  {what}: health {report.get('health')}; North America -> {na}, Europe -> {eu} (via {via}){note}")
        self.expect((na, eu) == expect, f"after {what}: NA {na}, EU {eu}, expected {expect}")
        self.report["dns"].append({"event": what, "via": via, "changes": len(report.get("changes", [])),
                                   "applied": bool(report.get("applied")), "errors": errors, "held": held,
                                   "northAmerica": na, "europe": eu, "seconds": round(seconds, 3)})

    def count_things(self) -> None:
        """What moto's IoT holds in each region, against the decisions."""
        serials = set(self.report["devices"])
        self.report["things"] = {}
        for region in REGIONS:
            held, token = 0, None
            while True:
                page = self.iot[region].list_things(maxResults=250, **({"nextToken": token} if token else {}))
                held += sum(t["thingName"] in serials for t in page["things"])
                token = page.get("nextToken")
                if not token:
                    break
            allowed = sum(d["allowed"] for d in self.report["devices"].values() if d["region"] == region)
            self.report["things"][region] = held
            self.expect(held == allowed, f"{region}: {held} things in IoT, {allowed} devices allowed")

    def summary(self) -> int:
        devices = self.report["devices"].values()
        print("\nsummary")
        print(f"  {'region':<10} {'devices':>7} {'allowed':>7} {'denied':>6}")
        for region in REGIONS:
            mine = [d for d in devices if d["region"] == region]
            allowed = sum(d["allowed"] for d in mine)
            print(f"  {region:<10} {len(mine):>7} {allowed:>7} {len(mine) - allowed:>6}")
        print(f"\n  {'region':<10} {'things in IoT':>13} {'allowed':>7}")
        for region in REGIONS:
            allowed = sum(d["allowed"] for d in devices if d["region"] == region)
            print(f"  {region:<10} {self.report['things'][region]:>13} {allowed:>7}")
        print(f"\n  {'reason':<20} {'count':>5}")
        for reason, count in sorted(Counter(d["reason"] for d in devices).items()):
            print(f"  {reason:<20} {count:>5}")
        print(f"\n  {'attacker with the claim key':<45} {'answer'}")
        for step in self.report.get("attacker", []):
            print(f"  {step['attempt']:<45} {'ALLOWED' if step['allowed'] else 'refused'} ({step['reason']})")
        c = self.report["certificates"]
        print(f"\n  certificates: {c.get('requested', 0)} requested, {c.get('issued', 0)} issued, "
              f"{c.get('verified', 0)} verified against the CA, batch {c.get('batchSeconds', 0)} s")
        print(f"\n  {'DNS step':<24} {'via':<14} {'records':>7} {'NA':<10} {'EU':<10} {'ms':>6}")
        for step in self.report["dns"]:
            written = step["changes"] if step["applied"] else 0
            print(f"  {step['event']:<24} {step['via']:<14} {written:>7} {step['northAmerica']:<10} "
                  f"{step['europe']:<10} {step['seconds'] * 1000:6.0f}")
        self.report["failures"] = self.failures
        path = Path(self.args.report)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.report, indent=2))
        print(f"\nreport: {path}")
        if self.failures:
            print(f"{len(self.failures)} expectation(s) failed:")
            for failure in self.failures[:20]:
                print(f"  - {failure}")
            return 1
        print("every expectation met")
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--jitr", type=int, default=50)
    parser.add_argument("--jitr-connect", type=int, default=5,
                        help="how many JITR devices connect with their issued certificates")
    parser.add_argument("--profile", default="release", choices=["release", "debug"])
    parser.add_argument("--report", default=str(ROOT / "target/demo-report.json"))
    parser.add_argument("--seed", type=int, default=7)
    return Demo(parser.parse_args()).run()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
