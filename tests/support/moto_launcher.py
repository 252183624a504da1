"""Start moto server on a free 127.0.0.1 port for geoprov's tests and scripts.

Prints the port on stdout, then serves until its parent process (the test
binary, or a script) exits, so no server outlives the run that started it.

Requests are served one at a time. moto applies a TransactWriteItems without
isolation from concurrent requests (it copies every table, applies, and
restores the copy on failure), so a threaded server lets concurrent
conditional transactions all pass their checks. DynamoDB serialises writes to
an item; serving requests in order gives the tests that guarantee, while the
clients still race (reads and writes of concurrent invocations interleave).
Connections are accepted as they come and served in order (`_QueuedServer`),
and a silent one is closed after 5 s, so that a fleet's burst of clients
waits its turn instead of stalling the server.

Nine corrections to moto, to AWS's documented behaviour, and one to its
cost:
- DynamoDB's TransactWriteItems: moto 5.2.5 deep-copies every table a
  transaction touches, once per item, to restore on failure. On a table of
  thousands of devices (the game day's) that makes each issuance take
  seconds and the server's memory grow by gigabytes. The patch keeps a copy
  of each item the transaction names instead, and restores those on
  failure: the same outcome, since requests are served one at a time.
- IoT identifies a certificate by the SHA-256 of its DER; moto by default
  hashes the PEM text unless `use_valid_cert` is on.
- Route 53: a DELETE names one record set by name, type and set identifier.
  moto 5.2.5 deletes every record set of the zone that has the set
  identifier, whatever its name, so deleting one failover record would
  delete all the failover records sharing its identifier.
- Route 53 applies a change batch's changes in order, as one transaction:
  the guide's atomic way to turn a record into another of the same name,
  type and set identifier is DELETE + CREATE in one batch. moto 5.2.5
  checks every CREATE against the zone as it was before the batch, and
  only once the same record was created before (its change journal), so
  the pair fails on a record created, replaced and created again. A CREATE
  that an earlier DELETE of the same batch makes room for passes.
- S3 checks `x-amz-expected-bucket-owner`: a GetObject or PutObject whose
  expected owner is not the bucket's account fails with 403 Access Denied
  (S3 API reference, "Verifying bucket ownership with bucket owner
  condition"). moto 5.2.5 ignores the header.
- IoT keeps a CA certificate's auto-registration status and certificate
  mode. moto 5.2.5 drops RegisterCACertificate's allowAutoRegistration and
  certificateMode and UpdateCACertificate's newAutoRegistrationStatus, and its
  DescribeCACertificate answers neither field; AWS's description has both
  (autoRegistrationStatus ENABLE|DISABLE, certificateMode DEFAULT|SNI_ONLY).
- IoT lists CA certificates (ListCACertificates), which geoprov-iot-emu asks
  to find the CA of a certificate it has not seen (JITP, JITR); moto 5.2.5 has no
  such action.
- IoT's DescribeCertificate answers the caCertificateId of a certificate
  registered under a CA (CertificateDescription); moto 5.2.5 keeps it but
  leaves it out of the description, and the JITR activation checks it.
- Route 53: a CLOUDWATCH_METRIC health check names its alarm (AlarmIdentifier
  Region and Name) and copies the alarm's settings into its
  CloudWatchAlarmConfiguration on CreateHealthCheck, keeping that copy until
  an UpdateHealthCheck names the alarm again; every update bumps
  HealthCheckVersion. moto 5.2.5 drops AlarmIdentifier and
  InsufficientDataHealthStatus, never fills CloudWatchAlarmConfiguration and
  never bumps the version. An alarm missing from its region is InvalidInput.
- IoT's certificate provider (CreateCertificateProvider, Describe-, List-,
  Update-, DeleteCertificateProvider, the API reference's shapes and REST
  paths under /certificate-providers): moto 5.2.5 has none. The name is
  1 to 128 of [\\w=,@-]; accountDefaultForOperations is exactly
  ["CreateCertificateFromCsr"] ("Array Members: Fixed number of 1 item.
  Valid Values: CreateCertificateFromCsr"). The developer guide's
  "Self-managed certificate signing using AWS IoT Core certificate provider"
  says "You can only create one certificate provider per AWS account",
  while the API and its ARNs are regional; we hold the stricter reading: a
  second provider anywhere in the account, in any region, is refused.
"""
import os
import queue
import re
import sys
import threading
import time
from urllib.parse import unquote

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import BaseWSGIServer
from moto.cloudwatch.models import cloudwatch_backends
from moto.core.config import default_user_config
from moto.core.exceptions import JsonRESTError
from moto.core.responses import ActionResult, EmptyResult
from moto.core.utils import utcnow
from moto.iot import models as iot_models
from moto.iot.models import iot_backends
from moto.iot import responses as iot_responses
from moto.route53 import models as route53_models
from moto.route53 import responses as route53_responses
from moto.route53.exceptions import InvalidInput


# The record sets a change batch deletes by set identifier, in order. The
# server handles one request at a time, so one list serves.
_deletes_by_identifier = []


def _patch_route53_delete():
    original_change = route53_models.Route53Backend.change_resource_record_sets

    def change_resource_record_sets(self, zoneid, change_list):
        _deletes_by_identifier[:] = [
            change["ResourceRecordSet"]
            for change in change_list
            if change["Action"] == "DELETE" and "SetIdentifier" in change["ResourceRecordSet"]
        ]
        try:
            return original_change(self, zoneid, change_list)
        finally:
            _deletes_by_identifier.clear()

    def delete_rrset_by_id(self, set_identifier):
        record_set = _deletes_by_identifier.pop(0)
        name = record_set["Name"].rstrip(".").lower()
        self.rrsets = [
            rs
            for rs in self.rrsets
            if not (
                rs.name.rstrip(".").lower() == name
                and rs.type == record_set["Type"]
                and rs.set_identifier == set_identifier
            )
        ]

    route53_models.Route53Backend.change_resource_record_sets = change_resource_record_sets
    route53_models.FakeZone.delete_rrset_by_id = delete_rrset_by_id


def _alarm_configuration(account_id, identifier):
    """The CloudWatchAlarmConfiguration copied from the alarm as it is now."""
    region, name = identifier["Region"], identifier["Name"]
    alarm = cloudwatch_backends[account_id][region].alarms.get(name)
    if alarm is None:
        raise InvalidInput(f"The CloudWatch alarm {name} does not exist in {region}.")
    return {
        "EvaluationPeriods": alarm.evaluation_periods,
        "Threshold": alarm.threshold,
        "ComparisonOperator": alarm.comparison_operator,
        "Period": alarm.period,
        "MetricName": alarm.metric_name,
        "Namespace": alarm.namespace,
        "Statistic": alarm.statistic,
        "Dimensions": [{"Name": d.name, "Value": d.value} for d in alarm.dimensions],
    }


def _patch_route53_alarm_health_check():
    original_config = route53_models.HealthCheck.health_check_config
    original_create = route53_responses.Route53.create_health_check
    original_update = route53_responses.Route53.update_health_check

    # The serializer reads HealthCheck.CloudWatchAlarmConfiguration from the
    # attribute cloud_watch_alarm_configuration, absent until an alarm is named.
    def health_check_config(self):
        config = original_config.fget(self)
        config["AlarmIdentifier"] = getattr(self, "alarm_identifier", None)
        config["InsufficientDataHealthStatus"] = getattr(
            self, "insufficient_data_health_status", None
        )
        return config

    def create_health_check(self):
        config = self._get_param("HealthCheckConfig")
        identifier = config.get("AlarmIdentifier")
        alarm = _alarm_configuration(self.current_account, identifier) if identifier else None
        result = original_create(self)
        check = result.result["HealthCheck"]
        check.alarm_identifier = identifier
        check.cloud_watch_alarm_configuration = alarm
        check.insufficient_data_health_status = config.get("InsufficientDataHealthStatus")
        return result

    def update_health_check(self):
        identifier = self._get_param("AlarmIdentifier")
        alarm = _alarm_configuration(self.current_account, identifier) if identifier else None
        result = original_update(self)
        check = result.result["HealthCheck"]
        if identifier:
            check.alarm_identifier = identifier
            check.cloud_watch_alarm_configuration = alarm
        status = self._get_param("InsufficientDataHealthStatus")
        if status:
            check.insufficient_data_health_status = status
        check.health_check_version += 1
        return result

    route53_models.HealthCheck.health_check_config = property(health_check_config)
    route53_responses.Route53.create_health_check = create_health_check
    route53_responses.Route53.update_health_check = update_health_check


def _patch_route53_delete_then_create():
    checked_change = route53_models.Route53Backend.change_resource_record_sets

    def key(change):
        record = change["ResourceRecordSet"]
        return (record["Name"].rstrip(".").lower(), record["Type"], record.get("SetIdentifier"))

    def change_resource_record_sets(self, zoneid, change_list):
        zone = self.get_hosted_zone(zoneid)
        deleted = set()
        room_made = []
        for change in change_list:
            if change["Action"] == "DELETE":
                deleted.add(key(change))
            elif change["Action"] == "CREATE" and key(change) in deleted:
                room_made.append(change)
        # moto's pre-check looks a CREATE up in its journal; one an earlier
        # DELETE of this batch makes room for is taken out of that look-up.
        for change in room_made:
            while change in zone.rr_changes:
                zone.rr_changes.remove(change)
        return checked_change(self, zoneid, change_list)

    route53_models.Route53Backend.change_resource_record_sets = change_resource_record_sets


def _patch_s3_expected_bucket_owner():
    from moto.s3 import responses as s3_responses
    from moto.s3.exceptions import S3AccessDeniedError

    def checked(original):
        def action(self, *args, **kwargs):
            expected = self.headers.get("x-amz-expected-bucket-owner")
            if expected is not None:
                bucket = self.backend.get_bucket(self.bucket_name)
                if bucket.account_id != expected:
                    raise S3AccessDeniedError()
            return original(self, *args, **kwargs)

        return action

    for name in ("get_object", "put_object"):
        setattr(s3_responses.S3Response, name, checked(getattr(s3_responses.S3Response, name)))


def _patch_iot_ca_certificate():
    original_description = iot_models.FakeCaCertificate.to_description_dict
    original_update = iot_responses.IoTResponse.update_ca_certificate

    def to_description_dict(self):
        description = original_description(self)
        description["autoRegistrationStatus"] = getattr(
            self, "auto_registration_status", "DISABLE"
        )
        description["certificateMode"] = getattr(self, "certificate_mode", "DEFAULT")
        return description

    def register_ca_certificate(self):
        certificate = self.iot_backend.register_ca_certificate(
            ca_certificate=self._get_param("caCertificate"),
            set_as_active=self._get_bool_param("setAsActive"),
            registration_config=self._get_param("registrationConfig"),
        )
        allow = self._get_bool_param("allowAutoRegistration", False)
        certificate.auto_registration_status = "ENABLE" if allow else "DISABLE"
        certificate.certificate_mode = self._get_param("certificateMode") or "DEFAULT"
        return ActionResult(
            {"certificateId": certificate.certificate_id, "certificateArn": certificate.arn}
        )

    def update_ca_certificate(self):
        result = original_update(self)
        status = self._get_param("newAutoRegistrationStatus")
        if status is not None:
            certificate_id = self.path.split("/")[-1]
            self.iot_backend.describe_ca_certificate(
                certificate_id
            ).auto_registration_status = status
        return result

    def list_ca_certificates(self):
        certificates = [
            {
                "certificateArn": ca.arn,
                "certificateId": ca.certificate_id,
                "status": ca.status,
                "creationDate": ca.creation_date,
            }
            for ca in self.iot_backend.ca_certificates.values()
        ]
        return ActionResult({"certificates": certificates})

    original_certificate_description = iot_models.FakeCertificate.to_description_dict

    def certificate_description(self):
        description = original_certificate_description(self)
        if getattr(self, "ca_certificate_id", None):
            description["caCertificateId"] = self.ca_certificate_id
        return description

    iot_models.FakeCertificate.to_description_dict = certificate_description
    iot_responses.IoTResponse.list_ca_certificates = list_ca_certificates
    iot_models.FakeCaCertificate.to_description_dict = to_description_dict
    iot_responses.IoTResponse.register_ca_certificate = register_ca_certificate
    iot_responses.IoTResponse.update_ca_certificate = update_ca_certificate


# IoT's LimitExceededException is HTTP 410 (the API reference's Errors).
class _IotLimitExceeded(JsonRESTError):
    code = 410

    def __init__(self, message):
        super().__init__("LimitExceededException", message)


_PROVIDER_NAME = re.compile(r"[A-Za-z0-9_=,@-]{1,128}")
_PROVIDER_OPERATIONS = ["CreateCertificateFromCsr"]


def _patch_iot_certificate_provider():
    """IoT's certificate provider API, kept on each region's IoT backend
    (so moto's reset clears it) as `certificate_providers`, by name."""
    from moto.iot.exceptions import (
        InvalidRequestException,
        ResourceAlreadyExistsException,
        ResourceNotFoundException,
    )

    def providers(backend):
        if not hasattr(backend, "certificate_providers"):
            backend.certificate_providers = {}
        return backend.certificate_providers

    def named(self):
        # The raw path: a percent-encoded "/" stays inside the name and fails
        # the pattern rather than shortening it.
        name = unquote(self.raw_path.rstrip("/").split("/")[-1])
        if not _PROVIDER_NAME.fullmatch(name):
            raise InvalidRequestException(
                f"certificateProviderName {name!r} does not match [\\w=,@-]+ (1 to 128)"
            )
        return name

    def checked_operations(operations):
        if operations != _PROVIDER_OPERATIONS:
            raise InvalidRequestException(
                "accountDefaultForOperations must be exactly [\"CreateCertificateFromCsr\"], "
                f"not {operations!r}"
            )
        return list(operations)

    def existing(self, name):
        provider = providers(self.iot_backend).get(name)
        if provider is None:
            raise ResourceNotFoundException(f"Certificate provider {name} does not exist.")
        return provider

    def create_certificate_provider(self):
        name = named(self)
        operations = checked_operations(self._get_param("accountDefaultForOperations"))
        function = self._get_param("lambdaFunctionArn")
        if not function:
            raise InvalidRequestException("lambdaFunctionArn is required.")
        arn = (
            f"arn:{self.partition}:iot:{self.region}:{self.current_account}"
            f":certificateprovider/{name}"
        )
        here = providers(self.iot_backend)
        if name in here:
            raise ResourceAlreadyExistsException(
                f"Certificate provider {name} already exists.", name, arn
            )
        # One per account: the account's others, in every region moto has
        # made. LimitExceededException ("A limit has been exceeded") rather
        # than ResourceAlreadyExistsException, which names this resource
        # (name and ARN): what refuses it is the account's quota of one, and
        # the provider that holds it may have another name or region.
        for backend in list(iot_backends[self.current_account].values()):
            for other in providers(backend).values():
                raise _IotLimitExceeded(
                    "You can only create one certificate provider per AWS account: "
                    f"{other['certificateProviderArn']} exists."
                )
        now = utcnow()
        here[name] = {
            "certificateProviderName": name,
            "certificateProviderArn": arn,
            "lambdaFunctionArn": function,
            "accountDefaultForOperations": operations,
            "creationDate": now,
            "lastModifiedDate": now,
        }
        return ActionResult({"certificateProviderName": name, "certificateProviderArn": arn})

    def describe_certificate_provider(self):
        return ActionResult(dict(existing(self, named(self))))

    def list_certificate_providers(self):
        ascending = self._get_param("isAscendingOrder")
        ascending = ascending if isinstance(ascending, bool) else str(ascending).lower() != "false"
        summaries = sorted(
            (
                {
                    "certificateProviderName": p["certificateProviderName"],
                    "certificateProviderArn": p["certificateProviderArn"],
                }
                for p in providers(self.iot_backend).values()
            ),
            key=lambda p: p["certificateProviderName"],
            reverse=not ascending,
        )
        return ActionResult({"certificateProviders": summaries})

    def update_certificate_provider(self):
        provider = existing(self, named(self))
        operations = self._get_param("accountDefaultForOperations")
        if operations is not None:
            provider["accountDefaultForOperations"] = checked_operations(operations)
        function = self._get_param("lambdaFunctionArn")
        if function:
            provider["lambdaFunctionArn"] = function
        provider["lastModifiedDate"] = utcnow()
        return ActionResult(
            {
                "certificateProviderName": provider["certificateProviderName"],
                "certificateProviderArn": provider["certificateProviderArn"],
            }
        )

    def delete_certificate_provider(self):
        name = named(self)
        existing(self, name)
        del providers(self.iot_backend)[name]
        return EmptyResult()

    for action in (
        create_certificate_provider,
        describe_certificate_provider,
        list_certificate_providers,
        update_certificate_provider,
        delete_certificate_provider,
    ):
        setattr(iot_responses.IoTResponse, action.__name__, action)


def _patch_dynamodb_transaction_snapshot():
    from moto.dynamodb import models as dynamodb_models
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table
    import copy as real_copy

    class TablesByReference:
        """moto's module sees this as `copy`: a table is not copied (the
        items are, below); anything else is."""

        @staticmethod
        def deepcopy(value, *args, **kwargs):
            if isinstance(value, Table):
                return value
            return real_copy.deepcopy(value, *args, **kwargs)

        def __getattr__(self, name):
            return getattr(real_copy, name)

    by_reference = TablesByReference()
    original = dynamodb_models.DynamoDBBackend.transact_write_items

    def key_of(table, op):
        attrs = op.get("Item") or op.get("Key") or {}
        if table.hash_key_attr not in attrs:
            return None
        hash_value = DynamoType(attrs[table.hash_key_attr])
        range_value = None
        if table.range_key_attr is not None:
            if table.range_key_attr not in attrs:
                return None
            range_value = DynamoType(attrs[table.range_key_attr])
        return hash_value, range_value

    def restore(table, key, item):
        hash_value, range_value = key
        table.delete_item(hash_value, range_value)
        if item is None:
            return
        if range_value is None:
            table.items[hash_value] = item
        else:
            table.items[hash_value][range_value] = item

    def transact_write_items(self, transact_items):
        saved = []
        for entry in transact_items:
            try:
                _, op = next(iter(entry.items()))
                table = self.tables.get(op.get("TableName"))
                key = key_of(table, op) if table is not None else None
            except Exception:  # an ill-formed item: moto's own checks answer it
                continue
            if key is None:
                continue
            hash_value, range_value = key
            if range_value is None:
                current = table.items.get(hash_value)
            else:
                current = table.items.get(hash_value, {}).get(range_value)
            saved.append((table, key, real_copy.deepcopy(current)))
        dynamodb_models.copy = by_reference
        try:
            return original(self, transact_items)
        except Exception:
            for table, key, item in reversed(saved):
                restore(table, key, item)
            raise
        finally:
            dynamodb_models.copy = real_copy

    dynamodb_models.DynamoDBBackend.transact_write_items = transact_write_items


class _Handler(MotoRequestHandler):
    """A connection that sends nothing for 5 s is closed, so that one
    stalled client cannot hold the one-at-a-time server."""

    timeout = 5


class _QueuedServer(BaseWSGIServer):
    """Requests served one at a time, connections accepted at once.

    werkzeug's single-threaded server accepts a connection only when it has
    served the one before, so a fleet's burst of clients waits in the
    kernel's listen queue. When that overflows, the kernel drops the
    handshake's last ACK: the client, connected, sends its request, which
    is dropped too and arrives only when TCP retransmits it, seconds later,
    while the server, having accepted the connection, waits on it and
    serves no one. Here one thread accepts every connection as it comes
    (the request then waits in the socket's buffer) and another serves the
    accepted connections in order."""

    request_queue_size = 4096

    def __init__(self, host, port, app, handler):
        super().__init__(host, port, app, handler=handler)
        self._accepted = queue.SimpleQueue()

    def process_request(self, request, client_address):
        self._accepted.put((request, client_address))

    def serve_queue(self):
        while True:
            request, client_address = self._accepted.get()
            try:
                self.finish_request(request, client_address)
            except Exception:  # noqa: BLE001 - as socketserver's handle_error
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)


def main() -> None:
    default_user_config["iot"]["use_valid_cert"] = True
    _patch_route53_delete()
    _patch_route53_alarm_health_check()
    _patch_route53_delete_then_create()
    _patch_s3_expected_bucket_owner()
    _patch_iot_ca_certificate()
    _patch_iot_certificate_provider()
    _patch_dynamodb_transaction_snapshot()
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    app = DomainDispatcherApplication(create_backend_app)
    server = _QueuedServer("127.0.0.1", port, app, handler=_Handler)
    threading.Thread(target=server.serve_queue, daemon=True).start()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(server.server_port, flush=True)
    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(0.2)
    server.shutdown()


if __name__ == "__main__":
    main()
