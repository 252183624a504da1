"""What a function costs on Lambda, measured on this machine: the pieces every
geoprov function bench shares.

- `LocalCa`: a CA made at run time and a server certificate for 127.0.0.1,
  so the stub speaks HTTPS as AWS endpoints do; functions trust it through
  AWS_CA_BUNDLE (geoprov's shared client adds it, boto3 uses it).
- `Stub`: an instant AWS endpoint for the JSON protocols (X-Amz-Target), over
  HTTPS or plain HTTP, keep-alive, answering from data given up front. It is
  the backend both contenders share, so what differs is the function.
- `iot_answer`: IoT's registry API (REST-JSON) through the Stub's `other`
  hook, as a just-in-time registration finds it: the certificate pending,
  the thing still to make.
- `RuntimeApi`: the Lambda Runtime API, keep-alive as Lambda's is: a function
  polls /next on one connection and posts its answer on it.
- `cpu_ns`: CPU time of a process and all its live threads in nanoseconds,
  from /proc/<pid>/task/*/schedstat. /proc/<pid>/stat counts the same time
  in clock ticks (10 ms here), too coarse for a cold start of a few ms; the
  bench prints its total as a cross-check. A thread that has exited is no
  longer counted; the functions here run one thread (the stub is an IP
  literal, so no DNS lookup starts tokio's blocking pool).
- `lambda_estimate`: CPU time turned into Lambda wall clock and cost at a
  memory size. Lambda gives CPU in proportion to memory, one vCPU at
  1,769 MB (AWS Lambda developer guide, "Configuring memory"), so a CPU
  millisecond takes 1769/M ms of wall clock below that.
"""
from __future__ import annotations

import datetime
import glob
import ipaddress
import json
import math
import os
import re
import selectors
import socket
import ssl
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

FULL_VCPU_MB = 1769
# Lambda on-demand prices, us-east-1 (aws.amazon.com/lambda/pricing): per
# GB-second of duration by architecture, and per request.
PRICE_PER_GB_SECOND = {"x86_64": 0.0000166667, "arm64": 0.0000133334}
PRICE_PER_MILLION_REQUESTS = 0.20
MEMORY_SIZES = (128, 256, 512, 1024, 1769)


def make_ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A P-256 CA valid for a day from five minutes ago: its key and
    certificate."""
    now = datetime.datetime.now(datetime.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                   .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                                  critical=True)
                   .sign(key, hashes.SHA256()))
    return key, certificate


class LocalCa:
    """A CA and a 127.0.0.1 server certificate, made now, in `directory`."""

    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.timezone.utc)
        ca_key, ca = make_ca("geoprov bench local CA")
        ca_name = ca.subject
        key = ec.generate_private_key(ec.SECP256R1())
        server = (x509.CertificateBuilder()
                  .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
                  .issuer_name(ca_name).public_key(key.public_key())
                  .serial_number(x509.random_serial_number())
                  .not_valid_before(now - datetime.timedelta(minutes=5))
                  .not_valid_after(now + datetime.timedelta(days=1))
                  .add_extension(x509.SubjectAlternativeName(
                      [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                      critical=False)
                  .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                                 critical=False)
                  .sign(ca_key, hashes.SHA256()))
        self.ca_pem = directory / "ca.pem"
        self.cert_pem = directory / "server.pem"
        self.key_pem = directory / "server.key"
        # The CA itself, for a stub that issues certificates (ACM PCA's).
        self.ca_key, self.ca_cert = ca_key, ca
        self.ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self.cert_pem.write_bytes(server.public_bytes(serialization.Encoding.PEM))
        fd = os.open(self.key_pem, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_pem, self.key_pem)
        return context


# An answer to one JSON-protocol call: (operation, request body) -> response
# body, or a StubError.
Answer = Callable[[str, dict], dict]
# An answer to any other call (REST-XML, query): (method, path, body) ->
# (status, body, content type), or None for "not mine".
OtherAnswer = Callable[[str, str, bytes], "tuple[int, bytes, str] | None"]


class StubError(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind, self.message = kind, message


class Stub:
    """An instant AWS endpoint for JSON-protocol services. `answers` maps a
    target prefix (e.g. "DynamoDB_20120810") to its Answer. Anything else is
    a 400, listed in `unanswered()`, so a bench can refuse a run where a
    contender asked something the stub does not know.

    It serves from a process of its own (forked, so `answers` may be any
    closures), a thread per connection, HTTP/1.1 keep-alive, parsing no more
    of a request than it needs: the bench's own waits stay out of the
    functions' figures as far as Python allows."""

    def __init__(self, answers: dict[str, Answer], ca: LocalCa | None, other: OtherAnswer | None = None):
        fd, path = tempfile.mkstemp(prefix="geoprov-stub-", suffix=".log")
        os.close(fd)
        self._unanswered = Path(path)
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        port = listener.getsockname()[1]
        context = ca.server_context() if ca else None
        self._pid = os.fork()
        if self._pid == 0:  # the stub's process
            try:
                _serve_stub(listener, context, answers, other, self._unanswered)
            finally:
                os._exit(0)
        listener.close()
        self.endpoint = f"{'https' if ca else 'http'}://127.0.0.1:{port}"

    def unanswered(self) -> list[str]:
        return self._unanswered.read_text().splitlines()

    def close(self):
        os.kill(self._pid, 9)
        os.waitpid(self._pid, 0)
        self._unanswered.unlink(missing_ok=True)


def _read_request(stream) -> tuple[str, dict[str, str], bytes] | None:
    """One HTTP/1.1 request: its request line, headers (lower-case names)
    and body, or None when the client closed the connection."""
    line = stream.readline()
    if not line:
        return None
    headers = {}
    while True:
        header = stream.readline()
        if header in (b"\r\n", b"\n", b""):
            break
        name, _, value = header.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = stream.read(int(headers.get("content-length", "0")))
    return line.decode("latin-1").strip(), headers, body


def _response(status: int, body: bytes, content_type: str, extra: dict | None = None) -> bytes:
    reason = {200: "OK", 202: "Accepted", 400: "Bad Request", 404: "Not Found"}[status]
    head = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}", f"x-amzn-RequestId: {uuid.uuid4()}"]
    head += [f"{k}: {v}" for k, v in (extra or {}).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _serve_stub(listener: socket.socket, context: ssl.SSLContext | None,
                answers: dict[str, Answer], other: OtherAnswer | None, log: Path) -> None:
    def connection(sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if context is not None:
                sock = context.wrap_socket(sock, server_side=True)
            stream = sock.makefile("rb")
            while (request := _read_request(stream)) is not None:
                line, headers, raw = request
                target = headers.get("x-amz-target", "")
                if not target and other is not None:
                    method, path, _ = line.split(" ", 2)
                    answered = other(method, path, raw)
                    if answered is not None:
                        status, body, content_type = answered
                        sock.sendall(_response(status, body, content_type))
                        continue
                prefix, _, operation = target.partition(".")
                version = headers.get("content-type", "application/x-amz-json-1.0")
                try:
                    answer = answers.get(prefix)
                    if answer is None:
                        raise StubError("UnknownOperationException", f"no answer for {request[0]} {target!r}")
                    sock.sendall(_response(200, json.dumps(answer(operation, json.loads(raw or b"{}"))).encode(),
                                           version))
                except StubError as e:
                    with open(log, "a") as f:
                        f.write(f"{target}: {e.message}\n")
                    sock.sendall(_response(400, json.dumps({"__type": e.kind, "message": e.message}).encode(),
                                           version))
        except (OSError, ssl.SSLError):
            pass
        finally:
            sock.close()

    while True:
        sock, _ = listener.accept()
        threading.Thread(target=connection, args=(sock,), daemon=True).start()


def dynamodb_answer(partitions: dict[str, list[dict]]) -> Answer:
    """DynamoDB from a snapshot of items by partition key: Query and GetItem
    read it, writes succeed and change nothing, so every call of a bench finds
    the same state (and the hook allows every time)."""

    def answer(operation: str, body: dict) -> dict:
        if operation == "Query":
            pk = body.get("ExpressionAttributeValues", {}).get(":pk", {}).get("S")
            items = partitions.get(pk, [])
            return {"Items": items, "Count": len(items), "ScannedCount": len(items)}
        if operation == "GetItem":
            key = body["Key"]
            for item in partitions.get(key.get("pk", {}).get("S"), []):
                if all(item.get(k) == v for k, v in key.items()):
                    return {"Item": item}
            return {}
        if operation in ("TransactWriteItems", "PutItem", "UpdateItem", "DeleteItem"):
            return {}
        raise StubError("com.amazon.coral.validate#ValidationException", f"DynamoDB {operation}")

    return answer


# IoT's registry routes (REST-JSON; AWS IoT API reference, each operation's
# "Request Syntax"), the ones a JITR activation calls: (method, path pattern,
# operation). The query string is matched apart.
_IOT_ROUTES = [
    ("PUT", r"/thing-groups/addThingToThingGroup", "AddThingToThingGroup"),
    ("GET", r"/thing-groups/(?P<thingGroupName>[^/]+)", "DescribeThingGroup"),
    ("GET", r"/certificates/(?P<certificateId>[^/]+)", "DescribeCertificate"),
    ("PUT", r"/certificates/(?P<certificateId>[^/]+)", "UpdateCertificate"),
    ("GET", r"/things/(?P<thingName>[^/]+)", "DescribeThing"),
    ("POST", r"/things/(?P<thingName>[^/]+)", "CreateThing"),
    ("PATCH", r"/things/(?P<thingName>[^/]+)", "UpdateThing"),
    ("PUT", r"/things/(?P<thingName>[^/]+)/principals", "AttachThingPrincipal"),
    ("PUT", r"/target-policies/(?P<policyName>[^/]+)", "AttachPolicy"),
]


def iot_operation(method: str, target: str) -> tuple[str, dict[str, str]] | None:
    """The IoT operation of a request line's method and target, with its
    path and query parameters, or None for one of no route above."""
    path, _, query = target.partition("?")
    for route_method, pattern, operation in _IOT_ROUTES:
        matched = re.fullmatch(pattern, path) if method == route_method else None
        if matched:
            params = {k: urllib.parse.unquote(v) for k, v in matched.groupdict().items()}
            params.update(urllib.parse.parse_qsl(query))
            return operation, params
    return None


def iot_answer(certificates: dict[str, tuple[str, str]], thing_groups: set[str], region: str,
               account: str) -> OtherAnswer:
    """IoT's registry API as a just-in-time registration finds it: each of
    `certificates` (id -> (PEM, CA certificate id)) auto-registered and
    PENDING_ACTIVATION, the `thing_groups` there, no thing yet. The writes
    (CreateThing, UpdateThing, AddThingToThingGroup, AttachPolicy,
    AttachThingPrincipal, UpdateCertificate to ACTIVE) succeed and change
    nothing, so every activation of a bench finds the same state. A call of
    no route here, or naming a certificate or group not given, is not
    answered (the Stub lists it in `unanswered()`)."""
    arn = f"arn:aws:iot:{region}:{account}"
    created = 1_700_000_000.0

    def json_body(value: dict | None) -> tuple[int, bytes, str]:
        return 200, json.dumps(value).encode() if value is not None else b"", "application/json"

    def answer(method: str, target: str, body: bytes) -> tuple[int, bytes, str] | None:
        routed = iot_operation(method, target)
        if routed is None:
            return None
        operation, params = routed
        certificate = certificates.get(params.get("certificateId", ""))
        if operation == "DescribeCertificate" and certificate:
            pem, ca_id = certificate
            return json_body({"certificateDescription": {
                "certificateArn": f"{arn}:cert/{params['certificateId']}",
                "certificateId": params["certificateId"], "caCertificateId": ca_id,
                "status": "PENDING_ACTIVATION", "certificatePem": pem, "ownedBy": account,
                "creationDate": created, "lastModifiedDate": created, "customerVersion": 1,
                "generationId": str(uuid.uuid5(uuid.NAMESPACE_OID, params["certificateId"])),
                "certificateMode": "DEFAULT"}})
        if operation == "UpdateCertificate" and certificate and params.get("newStatus") == "ACTIVE":
            return json_body(None)
        if operation == "DescribeThingGroup" and params["thingGroupName"] in thing_groups:
            name = params["thingGroupName"]
            return json_body({"thingGroupName": name, "thingGroupId": str(uuid.uuid5(uuid.NAMESPACE_OID, name)),
                              "thingGroupArn": f"{arn}:thinggroup/{name}", "version": 1,
                              "thingGroupProperties": {},
                              "thingGroupMetadata": {"rootToParentThingGroups": [], "creationDate": created}})
        if operation == "DescribeThing":
            missing = {"__type": "ResourceNotFoundException",
                       "message": f"Thing {params['thingName']} cannot be found."}
            return 404, json.dumps(missing).encode(), "application/json"
        if operation in ("CreateThing", "UpdateThing"):
            name = params["thingName"]
            return json_body({"thingName": name, "thingArn": f"{arn}:thing/{name}",
                              "thingId": str(uuid.uuid5(uuid.NAMESPACE_OID, name))}
                             if operation == "CreateThing" else {})
        if operation == "AddThingToThingGroup" and json.loads(body or b"{}").get("thingGroupName") in thing_groups:
            return json_body({})
        if operation == "AttachPolicy":
            return json_body(None)
        if operation == "AttachThingPrincipal":
            return json_body({})
        return None

    return answer


class RuntimeApi:
    """The Lambda Runtime API for one function process at a time, keep-alive
    as Lambda's is, served from the bench's own thread (no other thread to
    wake): `wait_ready` returns when the function polls /next, `invoke` hands
    it an event and returns its answer."""

    PREFIX = "/2018-06-01/runtime"

    def __init__(self, timeout_ms: int = 30000):
        self.timeout_ms = timeout_ms
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._buffers: dict[socket.socket, bytearray] = {}
        self._poller: socket.socket | None = None  # the connection waiting on /next
        self._ready_at = 0.0

    def env(self, memory_mb: int) -> dict[str, str]:
        return {
            "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{self.port}",
            "AWS_LAMBDA_FUNCTION_NAME": "geoprov-bench",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/geoprov-bench",
            "AWS_LAMBDA_LOG_STREAM_NAME": "bench",
        }

    def _next_request(self, deadline: float) -> tuple[socket.socket, str, str, bytes]:
        """The next whole request on any connection: (connection, method,
        path, body)."""
        while True:
            for sock, buffer in self._buffers.items():
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    continue
                head = buffer[:end].decode("latin-1").split("\r\n")
                length = 0
                for line in head[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                if len(buffer) < end + 4 + length:
                    continue
                body = bytes(buffer[end + 4:end + 4 + length])
                del buffer[:end + 4 + length]
                method, path, _ = head[0].split(" ", 2)
                return sock, method, path, body
            timeout = deadline - time.perf_counter()
            if timeout <= 0:
                raise RuntimeError("the function did not call the Runtime API in time")
            for key, _ in self._selector.select(timeout):
                if key.fileobj is self._listener:
                    conn, _ = self._listener.accept()
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    self._buffers[conn] = bytearray()
                    self._selector.register(conn, selectors.EVENT_READ)
                    continue
                data = key.fileobj.recv(1 << 16)
                if not data:
                    self._selector.unregister(key.fileobj)
                    del self._buffers[key.fileobj]
                    key.fileobj.close()
                    continue
                self._buffers[key.fileobj] += data

    def wait_ready(self, timeout: float = 30) -> float:
        """When the function polls /next (it is then idle)."""
        deadline = time.perf_counter() + timeout
        while self._poller is None:
            sock, method, path, body = self._next_request(deadline)
            if method == "GET" and path == f"{self.PREFIX}/invocation/next":
                self._poller, self._ready_at = sock, time.perf_counter()
            elif path == f"{self.PREFIX}/init/error":
                raise RuntimeError(f"init error: {body[:300]!r}")
            else:
                sock.sendall(_response(404, b"{}", "application/json"))
        return self._ready_at

    def invoke(self, payload: dict, timeout: float = 30) -> tuple[float, dict]:
        """Hands `payload` to the waiting poller; returns the time to the
        answer (s) and the answer."""
        self.wait_ready(timeout)
        request_id = str(uuid.uuid4())
        started = time.perf_counter()
        deadline_ms = int(time.time() * 1000) + self.timeout_ms
        poller, self._poller = self._poller, None
        poller.sendall(_response(200, json.dumps(payload).encode(), "application/json", {
            "Lambda-Runtime-Aws-Request-Id": request_id,
            "Lambda-Runtime-Deadline-Ms": str(deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": "arn:aws:lambda:eu-west-1:123456789012:function:geoprov-bench",
            "Lambda-Runtime-Trace-Id": f"Root=1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:24]}",
        }))
        deadline = started + timeout
        while True:
            sock, method, path, body = self._next_request(deadline)
            if method == "POST" and path == f"{self.PREFIX}/invocation/{request_id}/response":
                elapsed = time.perf_counter() - started
                sock.sendall(_response(202, b'{"status":"OK"}', "application/json"))
                return elapsed, json.loads(body)
            if method == "POST" and path == f"{self.PREFIX}/invocation/{request_id}/error":
                sock.sendall(_response(202, b'{"status":"OK"}', "application/json"))
                raise RuntimeError(f"function error: {body[:300]!r}")
            if method == "GET" and path == f"{self.PREFIX}/invocation/next":
                raise RuntimeError("the function polled /next before answering")
            sock.sendall(_response(404, b"{}", "application/json"))

    def close(self):
        for sock in list(self._buffers):
            sock.close()
        self._selector.close()
        self._listener.close()


def cpu_ns(pid: int) -> int:
    """CPU time of every live thread of `pid`, in ns (schedstat)."""
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            total += int(Path(path).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def stat_cpu_ms(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def cold_start(command: list[str], env: dict[str, str], event: dict | None, log: Path,
               memory_mb: int) -> dict:
    """One cold start: spawn, init (until the first poll of /next), and the
    first invocation when `event` is given. Times in ms, CPU in ms."""
    api = RuntimeApi()
    with open(log, "ab") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(command, env=env | api.env(memory_mb), stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        ready = api.wait_ready()
        init_cpu = cpu_ns(proc.pid)
        sample = {"init_ms": (ready - started) * 1000, "init_cpu_ms": init_cpu / 1e6}
        if event is not None:
            _, answer = api.invoke(event)
            sample["cold_start_ms"] = (time.perf_counter() - started) * 1000
            api.wait_ready()
            sample["first_cpu_ms"] = (cpu_ns(proc.pid) - init_cpu) / 1e6
            sample["answer"] = answer
        else:
            sample["cold_start_ms"] = sample["init_ms"]
        return sample
    finally:
        _stop(proc)
        api.close()


def warm(command: list[str], env: dict[str, str], events: Callable[[int], dict], n: int,
         log: Path, memory_mb: int, warmup: int = 50, chunks: int = 10) -> dict:
    """One process: `warmup` invocations, then `n` measured in `chunks`:
    latency of each, CPU per invocation (the median of the chunks', so a
    burst of other work on the machine moves one chunk, not the figure),
    peak RSS, and the answers."""
    api = RuntimeApi()
    with open(log, "ab") as out:
        proc = subprocess.Popen(command, env=env | api.env(memory_mb), stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        api.wait_ready()
        for i in range(warmup):
            api.invoke(events(i))
            api.wait_ready()
        first_ns, first_ticks = cpu_ns(proc.pid), stat_cpu_ms(proc.pid)
        latencies, answers, per_chunk = [], [], []
        size = max(1, n // chunks)
        for c in range(0, n, size):
            before = cpu_ns(proc.pid)
            count = min(size, n - c)
            for i in range(c, c + count):
                elapsed, answer = api.invoke(events(warmup + i))
                latencies.append(elapsed * 1000)
                answers.append(answer)
                api.wait_ready()
            per_chunk.append((cpu_ns(proc.pid) - before) / 1e6 / count)
        last_ns, last_ticks = cpu_ns(proc.pid), stat_cpu_ms(proc.pid)
        return {
            "invocations": n,
            "cpu_per_invocation_ms": statistics.median(per_chunk),
            "cpu_per_invocation_ms_mean": (last_ns - first_ns) / 1e6 / n,
            "cpu_per_invocation_ms_from_stat": (last_ticks - first_ticks) / n,
            "warm_p50_ms": statistics.median(latencies),
            "warm_p99_ms": percentile(latencies, 99),
            "peak_rss_mib": peak_rss_mib(proc.pid),
            "answers": answers,
        }
    finally:
        _stop(proc)
        api.close()


def summarize(samples: list[dict]) -> dict:
    out = {"runs": len(samples), "answers": [s.get("answer") for s in samples]}
    for key in ("init_ms", "cold_start_ms", "init_cpu_ms", "first_cpu_ms"):
        values = [s[key] for s in samples if key in s]
        if values:
            out[key] = statistics.median(values)
            out[key + "_p90"] = percentile(values, 90)
    return out


def interleaved_cold_starts(contenders: list[tuple[list[str], dict, Path]], event: dict | None,
                            memory_mb: int, runs: int) -> list[dict]:
    """Cold starts of one or more contenders taken in turn, one of each per
    round, so a slow moment of the machine (its page cache is small and
    reclaimed) falls on all of them alike. One round first, not counted (the
    bench's own first-time costs land there)."""
    samples: list[list[dict]] = [[] for _ in contenders]
    for round_ in range(runs + 1):
        for i, (command, env, log) in enumerate(contenders):
            sample = cold_start(command, env, event, log, memory_mb)
            if round_:
                samples[i].append(sample)
    return [summarize(s) for s in samples]


def lambda_estimate(cpu_ms: float, memory_mb: int, wait_ms: float = 0.0,
                    architecture: str = "x86_64") -> dict:
    """Wall clock of `cpu_ms` of CPU at `memory_mb` (plus `wait_ms` waiting
    on the network, which memory does not shorten), and the cost of a million
    such invocations: duration billed by the ms, and the request fee."""
    share = min(1.0, memory_mb / FULL_VCPU_MB)
    wall = cpu_ms / share + wait_ms
    billed_s = math.ceil(wall) / 1000
    per_million = billed_s * (memory_mb / 1024) * PRICE_PER_GB_SECOND[architecture] * 1e6
    return {"memory_mb": memory_mb, "vcpu_share": share, "wall_ms": wall,
            "cost_per_million_usd": per_million + PRICE_PER_MILLION_REQUESTS}


def registry_snapshot(devices: list[dict], region: str, table: str,
                      geoprov: Path | None = None) -> dict[str, list[dict]]:
    """The registry's items by partition, as `geoprov registry import` writes
    `devices` (manifest lines) into moto, read back: the stub then answers
    with exactly what a deployed table holds. `geoprov`: the CLI to import
    with (default: the release build's)."""
    import boto3
    import local_aws
    local_aws.GEOPROV = geoprov or local_aws.ROOT / "target/release/geoprov"
    with local_aws.Processes() as procs:
        endpoint = local_aws.start_moto(procs)
        env = local_aws.aws_env(endpoint, region) | {"TABLE_NAME": table}
        local_aws.geoprov(env, "registry", "create-table")
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as manifest:
            for device in devices:
                manifest.write(json.dumps(device) + "\n")
        try:
            local_aws.geoprov(env, "registry", "import", manifest.name)
        finally:
            os.unlink(manifest.name)
        ddb = boto3.client("dynamodb", endpoint_url=endpoint, region_name=region,
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        partitions: dict[str, list[dict]] = {}
        for page in ddb.get_paginator("scan").paginate(TableName=table):
            for item in page["Items"]:
                partitions.setdefault(item["pk"]["S"], []).append(item)
        return partitions


def template_facts(root: Path, python: str) -> dict:
    out = subprocess.run([python, str(root / "scripts/template_facts.py"),
                          str(root / "template.yaml"), str(root / "global.yaml")],
                         check=True, capture_output=True, text=True, cwd=root)
    return json.loads(out.stdout)


def print_comparison(results: dict[str, list[dict]], unit: str) -> None:
    """The Rust and Python contenders side by side over HTTPS and HTTP, one
    row per figure; `unit` names one invocation ("decision", "activation")."""
    rows = [("cold start p50 (ms)", "cold_start_ms"), ("init CPU p50 (ms)", "init_cpu_ms"),
            ("first-invocation CPU p50 (ms)", "first_cpu_ms"),
            (f"CPU per warm {unit} (ms)", "cpu_per_invocation_ms"),
            ("warm p50 (ms)", "warm_p50_ms"), ("warm p99 (ms)", "warm_p99_ms"),
            ("peak RSS (MiB)", "peak_rss_mib"), ("size (KiB)", "size_kib")]
    print(f"| {'':<31}| {'HTTPS rust':>10} | {'HTTPS python':>12} | {'ratio':>6} "
          f"| {'HTTP rust':>9} | {'HTTP python':>11} | {'ratio':>6} |")
    print(f"|{'-' * 32}|{'-' * 12}:|{'-' * 14}:|{'-' * 7}:|{'-' * 11}:|{'-' * 13}:|{'-' * 7}:|")
    for label, key in rows:
        cells = []
        for transport in ("https", "http"):
            rust, python = results[transport]
            ratio = python[key] / rust[key] if rust[key] else float("nan")
            cells += [f"{rust[key]:.2f}", f"{python[key]:.2f}", f"{ratio:.1f}x"]
        print(f"| {label:<31}| {cells[0]:>10} | {cells[1]:>12} | {cells[2]:>6} "
              f"| {cells[3]:>9} | {cells[4]:>11} | {cells[5]:>6} |")


def print_estimate(rust: dict, memory: int, architecture: str, aws_wait_ms: float, unit: str) -> list[dict]:
    """The Lambda estimate of the Rust contender at each memory size (the
    template's marked): init, first and warm wall clock, cost per million
    warm invocations. Returns the rows."""
    first_label, warm_label = f"first {unit} (ms)", f"warm {unit} (ms)"
    print(f"| {'MemorySize (MB)':<16}| {'vCPU':>5} | {'init (ms)':>9} | {first_label:>{len(first_label)}} "
          f"| {warm_label:>{len(warm_label)}} | {'$ per million warm':>18} |")
    print(f"|{'-' * 17}|{'-' * 6}:|{'-' * 10}:|{'-' * (len(first_label) + 1)}:"
          f"|{'-' * (len(warm_label) + 1)}:|{'-' * 19}:|")
    estimates = []
    for size in MEMORY_SIZES:
        init = lambda_estimate(rust["init_cpu_ms"], size, 0, architecture)
        first = lambda_estimate(rust["first_cpu_ms"], size, aws_wait_ms, architecture)
        steady = lambda_estimate(rust["cpu_per_invocation_ms"], size, aws_wait_ms, architecture)
        estimates.append({"memory_mb": size, "init_ms": init["wall_ms"], "first_ms": first["wall_ms"],
                          "warm_ms": steady["wall_ms"], "cost_per_million_usd": steady["cost_per_million_usd"]})
        mark = " (template)" if size == memory else ""
        print(f"| {str(size) + mark:<16}| {init['vcpu_share']:>5.2f} | {init['wall_ms']:>9.1f} "
              f"| {first['wall_ms']:>{len(first_label)}.1f} | {steady['wall_ms']:>{len(warm_label)}.1f} "
              f"| {steady['cost_per_million_usd']:>18.3f} |")
    return estimates
