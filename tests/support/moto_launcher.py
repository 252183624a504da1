"""Start moto server on a free 127.0.0.1 port for the geoprov tests.

Prints the port on stdout, then serves until its parent process (the test
binary, or a script) exits, so no server outlives the run that started it.
"""
import os
import sys
import time

from moto.server import ThreadedMotoServer


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    print(server.get_host_and_port()[1], flush=True)
    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(0.2)
    server.stop()


if __name__ == "__main__":
    main()
