"""make demo: the pre-provisioning hook, for real, on this machine.

Starts moto and cargo-lambda's Runtime API emulator on 127.0.0.1, creates the
geoprov table and imports the sample factory manifest with the `geoprov` CLI,
runs the hook binary as Lambda would, sends it every sample event in
events/pre-provisioning-hook/, and prints each decision with the reason the
audit log recorded. Exits non-zero if any answer is not the expected one.
"""
from __future__ import annotations

import json
import sys
import time

from local_aws import ROOT, Processes, aws_env, function_env, geoprov, invoke, start_moto, start_runtime_emulator

FIXTURES = ROOT / "tests/fixtures/pre-provisioning-hook"


def main() -> int:
    expectations = json.loads((FIXTURES / "expected.json").read_text())
    region = expectations["environment"]["AWS_REGION"]
    with Processes() as procs:
        endpoint = start_moto(procs)
        env = aws_env(endpoint, region) | {"TABLE_NAME": "geoprov-demo"}
        geoprov(env, "registry", "create-table")
        imported = geoprov(env, "registry", "import", "--regions", region,
                           str(FIXTURES / "registry.jsonl"))
        print(f"moto at {endpoint}; table geoprov-demo; {imported['imported']} devices imported")

        port = start_runtime_emulator(procs)
        hook_env = env | expectations["environment"] | function_env(port)
        procs.start([str(ROOT / "target/debug/pre-provisioning-hook")], env=hook_env,
                    stdout=open(ROOT / "target/demo-hook.log", "w"), stderr=open(ROOT / "target/demo-hook.log", "a"))

        failures = 0
        print(f"\n{'event':<22} {'serial':<16} {'answer':<6} {'reason':<20} {'ms':>6}  ok")
        for path in sorted((ROOT / "events/pre-provisioning-hook").glob("*.json")):
            payload = json.loads(path.read_text())
            expected = expectations["events"][path.name]
            started = time.monotonic()
            response = invoke(port, payload)
            elapsed_ms = (time.monotonic() - started) * 1000
            serial = payload.get("parameters", {}).get("SerialNumber", "")
            reason = audit_reason(env, serial, payload["certificateId"]) if serial else expected["reason"]
            ok = response == expected["response"] and reason == expected["reason"]
            failures += not ok
            answer = "ALLOW" if response.get("allowProvisioning") else "DENY"
            print(f"{path.name:<22} {serial:<16} {answer:<6} {reason:<20} {elapsed_ms:6.1f}  {'yes' if ok else 'NO'}")
        print(f"\nhook log: target/demo-hook.log")
        print("all answers as expected" if not failures else f"{failures} unexpected answer(s)")
        return 1 if failures else 0


def audit_reason(env: dict[str, str], serial: str, certificate_id: str) -> str:
    events = geoprov(env, "audit", serial)
    matching = [e for e in events if e.get("certificateId") == certificate_id]
    return matching[-1]["reason"] if matching else "(no audit event)"


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
