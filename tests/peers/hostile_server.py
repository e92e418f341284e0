"""A zrpc server in its own process, for hostile-input tests and the fuzz suite.

Usage: hostile_server.py ENDPOINT LOGFILE [--heartbeat S] [--max-size BYTES] [--pool-size N]

Logs zrpc's records (WARNING and up) to LOGFILE, one per line, so a test can
check what was logged and that nothing reached the transport's catch-all. A
probe greenlet measures how late the hub runs it (the longest loop stall),
read and reset by the ``stall`` method. Prints READY once serving.
"""
import argparse
import logging
import time

import gevent

import zrpc

_stall = [0.0]


def _probe(every: float = 0.005) -> None:
    while True:
        start = time.monotonic()
        gevent.sleep(every)
        late = time.monotonic() - start - every
        if late > _stall[0]:
            _stall[0] = late


class Service:
    def __init__(self) -> None:
        self.server = None

    def add(self, a, b):
        return a + b

    def echo(self, value):
        return value

    def sleep(self, seconds):
        gevent.sleep(min(float(seconds), 60.0))
        return seconds

    @zrpc.stream
    def ticks(self, n, every):
        for i in range(min(int(n), 10000)):
            gevent.sleep(min(float(every), 5.0))
            yield i

    def stall(self):
        """The longest loop stall seen since the last call, in seconds (then reset)."""
        worst, _stall[0] = _stall[0], 0.0
        return worst

    def in_flight(self):
        return self.server.calls_in_flight - 1  # not counting this call


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("endpoint")
    parser.add_argument("logfile")
    parser.add_argument("--heartbeat", type=float, default=5.0)
    parser.add_argument("--max-size", type=int, default=None)
    parser.add_argument("--pool-size", type=int, default=None)
    opts = parser.parse_args()
    handler = logging.FileHandler(opts.logfile)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger("zrpc")
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    service = Service()
    kwargs = {"heartbeat": opts.heartbeat, "pool_size": opts.pool_size}
    if opts.max_size:
        kwargs["max_message_size"] = opts.max_size
    server = zrpc.Server(service, **kwargs)
    service.server = server
    server.bind(opts.endpoint)
    server.start()
    gevent.spawn(_probe)
    print("READY", flush=True)
    server.run()


if __name__ == "__main__":
    main()
