"""A zrpc server in its own process, for tests that kill it. Usage: zrpc_server.py ENDPOINT [HEARTBEAT]"""
import sys

import gevent

import zrpc


class Service:
    def add(self, a, b):
        return a + b

    def sleep(self, seconds):
        gevent.sleep(seconds)
        return seconds

    @zrpc.stream
    def ticks(self, n, every):
        for i in range(n):
            gevent.sleep(every)
            yield i


def main() -> None:
    endpoint = sys.argv[1]
    heartbeat = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
    server = zrpc.Server(Service(), heartbeat=heartbeat)
    server.bind(endpoint)
    server.start()
    print("READY", flush=True)
    server.run()


if __name__ == "__main__":
    main()
