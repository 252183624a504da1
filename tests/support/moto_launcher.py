"""Start moto server on a free 127.0.0.1 port for geoprov's tests and scripts.

Prints the port on stdout, then serves until its parent process (the test
binary, or a script) exits, so no server outlives the run that started it.

Requests are served one at a time. moto applies a TransactWriteItems without
isolation from concurrent requests (it copies every table, applies, and
restores the copy on failure), so a threaded server lets concurrent
conditional transactions all pass their checks. DynamoDB serialises writes to
an item; serving requests in order gives the tests that guarantee, while the
clients still race (reads and writes of concurrent invocations interleave).
"""
import os
import sys
import threading
import time

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(
        "127.0.0.1", port, app, threaded=False, request_handler=MotoRequestHandler
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(server.server_port, flush=True)
    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(0.2)
    server.shutdown()


if __name__ == "__main__":
    main()
