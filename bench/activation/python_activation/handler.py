"""The comparator of `make bench-activation`: a minimal Python 3 + boto3 JITR
activator, as the AWS samples deploy one, making the same AWS calls as
geoprov's device-activation in the same order for a registration event:

  IoT DescribeCertificate (pending, under a fleet CA; the subject CN is the
      serial, the key's SHA-256 the factory key)
  DynamoDB: two consistent Queries at once, the device's profile and block
      and its provisionings in every region
  IoT DescribeThing (no thing of another type), DescribeThingGroup
  DynamoDB TransactWriteItems: the profile's version and status, no block,
      this region's count under the quota, the guard, the audit event
  IoT DescribeThing, CreateThing (or UpdateThing), AddThingToThingGroup,
      AttachPolicy, AttachThingPrincipal, UpdateCertificate to ACTIVE

A denial is audited with one PutItem, as geoprov's is. Reading the
certificate takes `cryptography`, which the Lambda runtime does not carry (a
package or layer would). It runs its own Runtime API loop, as a custom
runtime would, on one kept-alive connection as Lambda's runtime interface
client does, so both contenders are driven the same way."""
import datetime
import hashlib
import json
import os
import sys
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

TABLE = os.environ["TABLE_NAME"]
REGION = os.environ["AWS_REGION"]
DEVICE_POLICY = os.environ["DEVICE_POLICY_NAME"]
THING_TYPE = os.environ["THING_TYPE_NAME"]
FLEET_CA_IDS = {i.strip().lower() for i in os.environ.get("FLEET_CA_CERTIFICATE_IDS", "").split(",") if i.strip()}
REQUIRE_FACTORY_KEY = os.environ.get("REQUIRE_FACTORY_KEY", "true") == "true"
DEFAULT_MAX = int(os.environ.get("DEFAULT_MAX_PROVISIONS", "3"))
DEFAULT_GROUP = os.environ.get("DEFAULT_THING_GROUP", "geoprov-devices")
GROUP_PREFIX = os.environ.get("THING_GROUP_PREFIX", "geoprov-")
CERTIFICATE_ID = re.compile(r"[0-9a-fA-F]{64}")
THING_NAME = re.compile(r"[A-Za-z0-9:_-]{1,128}")
iot = boto3.client("iot")
ddb = boto3.client("dynamodb")
reads = ThreadPoolExecutor(max_workers=2)


def partition(pk):
    return ddb.query(TableName=TABLE, ConsistentRead=True, KeyConditionExpression="#pk = :pk",
                     ExpressionAttributeNames={"#pk": "pk"},
                     ExpressionAttributeValues={":pk": {"S": pk}})["Items"]


def new_version():
    return f"{time.time_ns()}-{os.getpid()}"


def audit_item(serial, cert_id, decision, reason, detail, request_id, now):
    item = {"pk": {"S": f"AUDIT#DEVICE#{serial}" if serial else "AUDIT#UNATTRIBUTED"},
            "sk": {"S": f"AUDIT#{now}#{request_id}"}, "kind": {"S": "JITR_ACTIVATION"},
            "decision": {"S": decision}, "reason": {"S": reason}, "detail": {"S": detail}, "region": {"S": REGION},
            "certificateId": {"S": cert_id}, "requestId": {"S": request_id}, "time": {"S": now}}
    return item | ({"serialNumber": {"S": serial}} if serial else {})


def deny(serial, cert_id, reason, detail, request_id):
    now = datetime.datetime.now(datetime.timezone.utc).isoformat()
    ddb.put_item(TableName=TABLE, Item=audit_item(serial, cert_id, "DENY", reason, detail, request_id, now),
                 ConditionExpression="attribute_not_exists(#sk)", ExpressionAttributeNames={"#sk": "sk"})
    return {"outcome": "DENIED", "reason": reason, "detail": detail}


def activate(cert_arn, cert_id, serial, group, attributes):
    payload = {"attributes": attributes, "merge": True}
    try:
        iot.describe_thing(thingName=serial)
        iot.update_thing(thingName=serial, thingTypeName=THING_TYPE, attributePayload=payload)
    except iot.exceptions.ResourceNotFoundException:
        iot.create_thing(thingName=serial, thingTypeName=THING_TYPE, attributePayload=payload)
    iot.add_thing_to_thing_group(thingGroupName=group, thingName=serial)
    iot.attach_policy(policyName=DEVICE_POLICY, target=cert_arn)
    iot.attach_thing_principal(thingName=serial, principal=cert_arn)
    iot.update_certificate(certificateId=cert_id, newStatus="ACTIVE")


def handler(event, request_id):
    cert_id, ca_id = event.get("certificateId"), event.get("caCertificateId")
    if not all(isinstance(i, str) and CERTIFICATE_ID.fullmatch(i) for i in (cert_id, ca_id)):
        return {"outcome": "IGNORED", "why": "not a certificate registration event"}
    if ca_id not in FLEET_CA_IDS or event.get("certificateStatus") != "PENDING_ACTIVATION":
        return {"outcome": "IGNORED", "why": "not a pending certificate of a fleet CA"}
    try:
        described = iot.describe_certificate(certificateId=cert_id)["certificateDescription"]
    except iot.exceptions.ResourceNotFoundException:
        return {"outcome": "IGNORED", "why": "the certificate is not registered"}
    if described["status"] != "PENDING_ACTIVATION" or described.get("caCertificateId") != ca_id:
        return {"outcome": "IGNORED", "why": "not pending under the event's CA"}
    cert_arn = described["certificateArn"]
    certificate = x509.load_pem_x509_certificate(described["certificatePem"].encode())
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    serial = names[0].value if len(names) == 1 else None
    if not isinstance(serial, str) or not THING_NAME.fullmatch(serial):
        return deny("", cert_id, "UNKNOWN_DEVICE", "the certificate's subject CN is not a serial number", request_id)
    pk, state_pk, here_sk = f"DEVICE#{serial}", f"PROVISIONING#{serial}", f"REGION#{REGION}"
    for _ in range(3):
        device_read = reads.submit(partition, pk)
        states = partition(state_pk)
        items = device_read.result()
        profile = next((i for i in items if i["sk"]["S"] == "PROFILE"), None)
        if profile is None:
            return deny(serial, cert_id, "UNKNOWN_DEVICE", f"{serial} is not in the registry", request_id)
        if any(i["sk"]["S"] == "BLOCK" for i in items) or profile.get("status", {}).get("S", "ALLOWED") != "ALLOWED":
            return deny(serial, cert_id, "DEVICE_BLOCKED", f"{serial} is blocked", request_id)
        allowed = profile.get("allowedRegions", {}).get("L")
        if allowed is not None and REGION not in [r["S"] for r in allowed]:
            return deny(serial, cert_id, "REGION_NOT_ALLOWED", f"{serial} may not be provisioned in {REGION}",
                        request_id)
        group = profile.get("thingGroup", {}).get("S", DEFAULT_GROUP)
        if not group.startswith(GROUP_PREFIX):
            return deny(serial, cert_id, "THING_GROUP_NOT_ALLOWED", f"the thing group {group} is not allowed",
                        request_id)
        regions = [i for i in states if i["sk"]["S"].startswith("REGION#")]
        guard = next((i["guard"]["S"] for i in states if i["sk"]["S"] == "GUARD" and "guard" in i), None)
        certs = {r["sk"]["S"]: set(r.get("provisionedCertificateIds", {}).get("SS", [])) for r in regions}
        count = {r["sk"]["S"]: int(r.get("provisionCount", {}).get("N", "0")) for r in regions}
        quota = int(profile.get("maxProvisions", {}).get("N", DEFAULT_MAX))
        retry = any(cert_id in c for c in certs.values())
        if not retry and sum(count.values()) >= quota:
            return deny(serial, cert_id, "QUOTA_EXCEEDED", f"{serial} has used its provisionings", request_id)
        expected = profile.get("publicKeySha256", {}).get("S")
        if expected is not None:
            spki = certificate.public_key().public_bytes(serialization.Encoding.DER,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo)
            if hashlib.sha256(spki).hexdigest() != expected:
                return deny(serial, cert_id, "KEY_MISMATCH", f"the key presented for {serial} is not its factory key",
                            request_id)
        elif REQUIRE_FACTORY_KEY:
            return deny(serial, cert_id, "NO_FACTORY_KEY", f"{serial} has no factory key", request_id)
        try:
            thing_type = iot.describe_thing(thingName=serial).get("thingTypeName")
            if thing_type != THING_TYPE:
                return deny(serial, cert_id, "THING_TYPE_MISMATCH", f"a thing named {serial} has another type",
                            request_id)
        except iot.exceptions.ResourceNotFoundException:
            pass
        try:
            iot.describe_thing_group(thingGroupName=group)
        except iot.exceptions.ResourceNotFoundException:
            return deny(serial, cert_id, "INTERNAL_ERROR", f"the thing group {group} does not exist here", request_id)
        attributes = {k: v["S"] for k, v in profile.get("attributes", {}).get("M", {}).items()}
        attributes.update(serialNumber=serial, region=REGION)
        if retry:
            if cert_id not in certs.get(here_sk, set()):
                now = datetime.datetime.now(datetime.timezone.utc).isoformat()
                ddb.put_item(TableName=TABLE, ConditionExpression="attribute_not_exists(#sk)",
                             ExpressionAttributeNames={"#sk": "sk"},
                             Item=audit_item(serial, cert_id, "ALLOW", "ALLOWED",
                                             "provisioned in another region before; activated here, no quota used",
                                             request_id, now))
            activate(cert_arn, cert_id, serial, group, attributes)
            return {"outcome": "COMPLETED", "serial": serial}
        fenced = next((r for r in regions if r["sk"]["S"] == here_sk), {}).get("fencedCertificateIds", {})
        if cert_id in fenced.get("SS", []):
            return deny(serial, cert_id, "DEADLINE_EXCEEDED", "this certificate's provisioning was settled as not"
                        " applied here", request_id)
        elsewhere = sum(n for sk, n in count.items() if sk != here_sk)
        version = profile.get("version", {}).get("S")
        now = datetime.datetime.now(datetime.timezone.utc).isoformat()
        still_allowed = {"TableName": TABLE, "Key": {"pk": {"S": pk}, "sk": {"S": "PROFILE"}},
                         "ExpressionAttributeNames": {"#pk": "pk", "#status": "status", "#version": "version"},
                         "ExpressionAttributeValues": {":allowed": {"S": "ALLOWED"}}}
        unchanged = "attribute_not_exists(#version)" if version is None else "#version = :version"
        still_allowed["ConditionExpression"] = f"attribute_exists(#pk) AND #status = :allowed AND {unchanged}"
        if version is not None:
            still_allowed["ExpressionAttributeValues"][":version"] = {"S": version}
        guard_values = {":next": {"S": new_version()}} | ({":seen": {"S": guard}} if guard else {})
        try:
            ddb.transact_write_items(TransactItems=[
                {"ConditionCheck": still_allowed},
                {"ConditionCheck": {"TableName": TABLE, "Key": {"pk": {"S": pk}, "sk": {"S": "BLOCK"}},
                                    "ConditionExpression": "attribute_not_exists(#pk)",
                                    "ExpressionAttributeNames": {"#pk": "pk"}}},
                {"Update": {"TableName": TABLE, "Key": {"pk": {"S": state_pk}, "sk": {"S": here_sk}},
                            "UpdateExpression": "SET #count = if_not_exists(#count, :zero) + :one, "
                                                "#lastCert = :cert, #lastAt = :at "
                                                "ADD #certs :certSet, #committedBy :token",
                            "ConditionExpression": "(attribute_not_exists(#count) OR #count < :limit) "
                                                   "AND NOT contains(#certs, :cert) AND NOT contains(#fenced, :cert)",
                            "ExpressionAttributeNames": {"#fenced": "fencedCertificateIds", "#count": "provisionCount",
                                                         "#lastCert": "lastCertificateId",
                                                         "#lastAt": "lastProvisionedAt",
                                                         "#certs": "provisionedCertificateIds",
                                                         "#committedBy": "committedBy"},
                            "ExpressionAttributeValues": {":zero": {"N": "0"}, ":one": {"N": "1"},
                                                          ":limit": {"N": str(quota - elsewhere)},
                                                          ":cert": {"S": cert_id}, ":certSet": {"SS": [cert_id]},
                                                          ":at": {"S": now},
                                                          ":token": {"SS": [f"{cert_id}:{request_id}"]}}}},
                {"Update": {"TableName": TABLE, "Key": {"pk": {"S": state_pk}, "sk": {"S": "GUARD"}},
                            "UpdateExpression": "SET #guard = :next",
                            "ConditionExpression": "#guard = :seen" if guard else "attribute_not_exists(#guard)",
                            "ExpressionAttributeNames": {"#guard": "guard"},
                            "ExpressionAttributeValues": guard_values}},
                {"Put": {"TableName": TABLE, "ConditionExpression": "attribute_not_exists(#sk)",
                         "ExpressionAttributeNames": {"#sk": "sk"},
                         "Item": audit_item(serial, cert_id, "ALLOW", "ALLOWED", "every device rule passed",
                                            request_id, now)}},
            ])
        except ddb.exceptions.TransactionCanceledException as e:
            codes = [r.get("Code") for r in e.response.get("CancellationReasons", [])]
            if not codes or any(c in ("ConditionalCheckFailed", "TransactionConflict") for c in codes):
                continue
            raise
        activate(cert_arn, cert_id, serial, group, attributes)
        return {"outcome": "ACTIVATED", "serial": serial}
    raise RuntimeError("the device changed on each of 3 attempts")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from python_runtime import serve  # noqa: E402 - the runtime's loop, not part of the handler
    serve(handler)
