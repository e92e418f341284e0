"""A zrpc client that asks for many replies at once, for tests that freeze it before it reads them.

Usage: zrpc_flood_client.py ENDPOINT CALLS SIZE. Sends CALLS calls of blob(SIZE), prints READY
once all are sent, then waits (the test SIGSTOPs it, so the replies pile up on the server).
"""
import sys

import gevent

import zrpc


def main() -> None:
    endpoint, calls, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    client = zrpc.Client(endpoint, heartbeat=5, timeout=300)
    client._zerorpc_ping()
    futures = [client.blob.call_async(size) for _ in range(calls)]
    print("READY", flush=True)
    gevent.joinall(futures, timeout=300)


if __name__ == "__main__":
    main()
