"""The service tests/test_workers.py serves with ``zrpc serve --workers N`` (run from tests/peers).

Every method that matters for routing says which process ran it (``os.getpid()``).
"""
import os
import time

import gevent

import zrpc


class Service:
    def add(self, a, b):
        return a + b

    def echo(self, x):
        return x

    def pid(self):
        return os.getpid()

    def slow(self, seconds):
        """Sleep SECONDS (without blocking the worker), then return this worker's pid."""
        gevent.sleep(float(seconds))
        return os.getpid()

    def burn(self, ms):
        """Pure Python work for about MS milliseconds of CPU; returns this worker's pid."""
        deadline = time.process_time() + float(ms) / 1000
        n = 0
        while time.process_time() < deadline:
            n += 1
        return os.getpid()

    def caller(self):
        """What zrpc.current_call() shows inside a worker."""
        info = zrpc.current_call()
        return {"method": info.method, "peer_address": info.peer_address, "user_id": info.user_id,
                "pid": os.getpid()}

    @zrpc.stream
    def count(self, n):
        return iter(range(int(n)))

    @zrpc.stream
    def tagged(self, n, interval):
        """N items [i, pid], one every INTERVAL seconds."""
        pid = os.getpid()
        for i in range(int(n)):
            yield [i, pid]
            gevent.sleep(float(interval))
