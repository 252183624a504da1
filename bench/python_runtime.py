"""The loop Lambda's Python runtime runs around a handler, for the benches'
Python yardsticks, which run as plain processes under the bench's Runtime
API emulator: poll /next, call the handler, post its answer, or its error
as Lambda's error payload (the invocation fails, as geoprov's does)."""
from __future__ import annotations

import http.client
import json
import os
from typing import Callable


def serve(handler: Callable[[dict, str], dict]) -> None:
    api = os.environ["AWS_LAMBDA_RUNTIME_API"].removeprefix("http://")
    runtime = http.client.HTTPConnection(api)
    while True:
        runtime.request("GET", "/2018-06-01/runtime/invocation/next")
        resp = runtime.getresponse()
        request_id = resp.headers["Lambda-Runtime-Aws-Request-Id"]
        event = json.loads(resp.read())
        try:
            body, path = json.dumps(handler(event, request_id)).encode(), "response"
        except Exception as e:  # noqa: BLE001 - reported to the runtime, as Lambda's runtime does
            body, path = json.dumps({"errorType": type(e).__name__, "errorMessage": str(e)}).encode(), "error"
        runtime.request("POST", f"/2018-06-01/runtime/invocation/{request_id}/{path}", body=body,
                        headers={"Content-Type": "application/json"})
        runtime.getresponse().read()
