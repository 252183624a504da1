"""The comparator of `make bench-hook`: a minimal Python 3 + boto3
pre-provisioning hook, as the AWS samples deploy it, doing the same registry
read and conditional write as geoprov's Rust hook (two consistent Queries at
once, the device's profile and block and its provisionings in every region;
one TransactWriteItems: the profile's version and status, no block, this
region's count under the quota, and the audit event). It runs its own Runtime API loop, as a custom runtime
would, on one kept-alive connection as Lambda's runtime interface client
does, so both contenders are driven the same way."""
import datetime
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import os
import sys

import boto3

TABLE = os.environ["TABLE_NAME"]
REGION = os.environ["AWS_REGION"]
DEFAULT_MAX = int(os.environ.get("DEFAULT_MAX_PROVISIONS", "3"))
ddb = boto3.client("dynamodb")
reads = ThreadPoolExecutor(max_workers=2)


def partition(pk):
    return ddb.query(TableName=TABLE, ConsistentRead=True, KeyConditionExpression="pk = :pk",
                     ExpressionAttributeValues={":pk": {"S": pk}})["Items"]


def handler(event, request_id):
    params = event.get("parameters") or {}
    serial = params.get("SerialNumber")
    cert_id = event.get("certificateId")
    if not isinstance(serial, str) or not cert_id:
        return {"allowProvisioning": False}
    if any(k not in ("SerialNumber", "AWS::IoT::Certificate::Id") for k in params):
        return {"allowProvisioning": False}
    if event.get("clientId") != f"prov-{serial}":
        return {"allowProvisioning": False}
    pk = f"DEVICE#{serial}"
    state_pk = f"PROVISIONING#{serial}"
    device_read = reads.submit(partition, pk)
    regions = partition(state_pk)
    items = device_read.result()
    profile = next((i for i in items if i["sk"]["S"] == "PROFILE"), None)
    blocked = any(i["sk"]["S"] == "BLOCK" for i in items)
    if profile is None or blocked or profile.get("status", {}).get("S", "ALLOWED") != "ALLOWED":
        return {"allowProvisioning": False}
    allowed_regions = profile.get("allowedRegions", {}).get("L")
    if allowed_regions is not None and REGION not in [r["S"] for r in allowed_regions]:
        return {"allowProvisioning": False}
    quota = int(profile.get("maxProvisions", {}).get("N", DEFAULT_MAX))
    here_sk = f"REGION#{REGION}"
    total = sum(int(r.get("provisionCount", {}).get("N", "0")) for r in regions)
    elsewhere = total - sum(int(r.get("provisionCount", {}).get("N", "0")) for r in regions if r["sk"]["S"] == here_sk)
    if total >= quota:
        return {"allowProvisioning": False}
    version = profile.get("version", {}).get("S")
    now = datetime.datetime.now(datetime.timezone.utc).isoformat()
    try:
        ddb.transact_write_items(TransactItems=[
            {"ConditionCheck": {"TableName": TABLE, "Key": {"pk": {"S": pk}, "sk": {"S": "PROFILE"}},
                                "ConditionExpression": "attribute_exists(pk) AND #st = :a AND #v = :v",
                                "ExpressionAttributeNames": {"#st": "status", "#v": "version"},
                                "ExpressionAttributeValues": {":a": {"S": "ALLOWED"}, ":v": {"S": version}}}},
            {"ConditionCheck": {"TableName": TABLE, "Key": {"pk": {"S": pk}, "sk": {"S": "BLOCK"}},
                                "ConditionExpression": "attribute_not_exists(pk)"}},
            {"Update": {"TableName": TABLE, "Key": {"pk": {"S": state_pk}, "sk": {"S": here_sk}},
                        "UpdateExpression": "SET provisionCount = if_not_exists(provisionCount, :z) + :o, "
                                            "lastCertificateId = :c, lastProvisionedAt = :t "
                                            "ADD provisionedCertificateIds :cs",
                        "ConditionExpression": "(attribute_not_exists(provisionCount) OR provisionCount < :q) "
                                               "AND NOT contains(provisionedCertificateIds, :c) "
                                               "AND NOT contains(fencedCertificateIds, :c)",
                        "ExpressionAttributeValues": {":z": {"N": "0"}, ":o": {"N": "1"},
                                                      ":q": {"N": str(quota - elsewhere)},
                                                      ":c": {"S": cert_id}, ":cs": {"SS": [cert_id]},
                                                      ":t": {"S": now}}}},
            {"Put": {"TableName": TABLE, "Item": {
                "pk": {"S": f"AUDIT#DEVICE#{serial}"}, "sk": {"S": f"AUDIT#{now}#{request_id}"},
                "kind": {"S": "PROVISIONING_DECISION"}, "serialNumber": {"S": serial},
                "decision": {"S": "ALLOW"}, "reason": {"S": "ALLOWED"}, "detail": {"S": "every rule passed"},
                "region": {"S": REGION}, "certificateId": {"S": cert_id},
                "claimCertificateId": {"S": str(event.get("claimCertificateId"))},
                "clientId": {"S": str(event.get("clientId"))}, "requestId": {"S": request_id},
                "time": {"S": now}},
                "ConditionExpression": "attribute_not_exists(sk)"}},
        ])
    except ddb.exceptions.TransactionCanceledException:
        return {"allowProvisioning": False}
    return {"allowProvisioning": True, "parameterOverrides": {
        "Region": REGION, "ThingGroupName": "geoprov-devices", "model": "", "firmware": ""}}


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from python_runtime import serve  # noqa: E402 - the runtime's loop, not part of the handler
    serve(handler)
