"""A zrpc server in its own process, for tests that kill it.

Usage: zrpc_server.py ENDPOINT [HEARTBEAT] [--pool-size N] [--max-pending N]
"""
import sys

import gevent

import zrpc


class Service:
    def add(self, a, b):
        return a + b

    def blob(self, size):
        return b"x" * size

    def sleep(self, seconds):
        gevent.sleep(seconds)
        return seconds

    @zrpc.stream
    def ticks(self, n, every):
        for i in range(n):
            gevent.sleep(every)
            yield i


def main() -> None:
    args = sys.argv[1:]
    options = {}
    for flag, key in (("--pool-size", "pool_size"), ("--max-pending", "max_pending")):
        if flag in args:
            at = args.index(flag)
            options[key] = int(args[at + 1])
            del args[at:at + 2]
    endpoint = args[0]
    heartbeat = float(args[1]) if len(args) > 1 else 5.0
    server = zrpc.Server(Service(), heartbeat=heartbeat, **options)
    server.bind(endpoint)
    server.start()
    print("READY", flush=True)
    server.run()


if __name__ == "__main__":
    main()
