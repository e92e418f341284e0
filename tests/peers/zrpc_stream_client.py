"""A zrpc client in its own process that starts a stream, reads one item, prints READY and waits to be killed.

Usage: zrpc_stream_client.py ENDPOINT HEARTBEAT
"""
import sys

import gevent

import zrpc


def main() -> None:
    client = zrpc.Client(sys.argv[1], timeout=30, heartbeat=float(sys.argv[2]))
    stream = client.numbers()
    next(stream)
    print("READY", flush=True)
    gevent.sleep(60)


if __name__ == "__main__":
    main()
