"""The comparator of `make bench-hook`: a minimal Python 3 + boto3
pre-provisioning hook, as the AWS samples deploy it, doing the same registry
read and conditional write as geoprov's Rust hook (two consistent GetItems,
the profile and the state, at once; one TransactWriteItems with the quota
condition and the audit event). It runs its own Runtime API loop, as a custom runtime
would, so both contenders are driven the same way."""
import datetime
import json
from concurrent.futures import ThreadPoolExecutor
import os
import urllib.request

import boto3

TABLE = os.environ["TABLE_NAME"]
REGION = os.environ["AWS_REGION"]
DEFAULT_MAX = int(os.environ.get("DEFAULT_MAX_PROVISIONS", "3"))
ddb = boto3.client("dynamodb")
reads = ThreadPoolExecutor(max_workers=2)


def get(pk, sk):
    return ddb.get_item(TableName=TABLE, ConsistentRead=True,
                        Key={"pk": {"S": pk}, "sk": {"S": sk}}).get("Item")


def handler(event, request_id):
    serial = (event.get("parameters") or {}).get("SerialNumber")
    cert_id = event.get("certificateId")
    if not isinstance(serial, str) or not cert_id:
        return {"allowProvisioning": False}
    pk = f"DEVICE#{serial}"
    state_pk = f"PROVISIONING#{serial}"
    profile_read = reads.submit(get, pk, "PROFILE")
    state = get(state_pk, "STATE") or {}
    profile = profile_read.result()
    if profile is None or profile.get("status", {}).get("S", "ALLOWED") != "ALLOWED":
        return {"allowProvisioning": False}
    regions = profile.get("allowedRegions", {}).get("L")
    if regions is not None and REGION not in [r["S"] for r in regions]:
        return {"allowProvisioning": False}
    quota = int(profile.get("maxProvisions", {}).get("N", DEFAULT_MAX))
    if int(state.get("provisionCount", {}).get("N", "0")) >= quota:
        return {"allowProvisioning": False}
    now = datetime.datetime.now(datetime.timezone.utc).isoformat()
    try:
        ddb.transact_write_items(TransactItems=[
            {"ConditionCheck": {"TableName": TABLE, "Key": {"pk": {"S": pk}, "sk": {"S": "PROFILE"}},
                                "ConditionExpression": "attribute_exists(pk) AND #st = :a",
                                "ExpressionAttributeNames": {"#st": "status"},
                                "ExpressionAttributeValues": {":a": {"S": "ALLOWED"}}}},
            {"Update": {"TableName": TABLE, "Key": {"pk": {"S": state_pk}, "sk": {"S": "STATE"}},
                        "UpdateExpression": "SET provisionCount = if_not_exists(provisionCount, :z) + :o, "
                                            "serialNumber = :sn, lastCertificateId = :c, lastRegion = :r, "
                                            "lastProvisionedAt = :t "
                                            "ADD provisionedCertificateIds :cs",
                        "ConditionExpression": "(attribute_not_exists(provisionCount) OR provisionCount < :q) "
                                               "AND NOT contains(provisionedCertificateIds, :c)",
                        "ExpressionAttributeValues": {":z": {"N": "0"}, ":o": {"N": "1"}, ":q": {"N": str(quota)},
                                                      ":c": {"S": cert_id}, ":cs": {"SS": [cert_id]}, ":sn": {"S": serial},
                                                      ":r": {"S": REGION}, ":t": {"S": now}}}},
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
    return {"allowProvisioning": True, "parameterOverrides": {"Region": REGION}}


def main():
    api = os.environ["AWS_LAMBDA_RUNTIME_API"]
    base = api if api.startswith("http") else f"http://{api}"
    while True:
        with urllib.request.urlopen(f"{base}/2018-06-01/runtime/invocation/next") as resp:
            request_id = resp.headers["Lambda-Runtime-Aws-Request-Id"]
            event = json.loads(resp.read())
        body = json.dumps(handler(event, request_id)).encode()
        urllib.request.urlopen(urllib.request.Request(
            f"{base}/2018-06-01/runtime/invocation/{request_id}/response", data=body, method="POST"))


if __name__ == "__main__":
    main()
