"""A zrpc.aio server in its own process, with gevent made unimportable first.

    python tests/peers/aio_server.py ENDPOINT [HEARTBEAT] [--uvloop]

Prints READY once bound; serves until killed. ``slow(seconds, marker)``
writes "cancelled" to the file ``marker`` if the server stops it.
"""
import asyncio
import sys
import time

sys.modules["gevent"] = None  # importing zrpc.aio must not need gevent

import zrpc.aio  # noqa: E402


class Service:
    async def add(self, a, b):
        """Add two numbers."""
        return a + b

    def echo(self, x):
        return x

    def greet(self, name, greeting="hello"):
        """Greet someone.

        The greeting defaults to hello.
        """
        return "%s %s" % (greeting, name)

    async def boom(self):
        raise ValueError("boom from zrpc")

    async def slow(self, seconds, marker=None):
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            if marker:
                with open(marker, "w") as f:
                    f.write("cancelled")
            raise
        return "slept %s" % seconds

    def blocking(self, seconds):
        time.sleep(seconds)  # runs in the server's thread pool, not in the loop
        return seconds

    async def count(self, n):
        for i in range(n):
            yield i

    async def count_then_fail(self, n):
        for i in range(n):
            yield i
        raise ValueError("stream broke after %d items" % n)

    def search(self, first, *, last="", limit=10):
        return [first, last, limit]

    async def loop_name(self):
        return type(asyncio.get_running_loop()).__module__


async def main() -> None:
    endpoint = sys.argv[1]
    heartbeat = float(sys.argv[2]) if len(sys.argv) > 2 and not sys.argv[2].startswith("--") else 5.0
    server = zrpc.aio.Server(Service(), name="aio_service", heartbeat=heartbeat)
    server.bind(endpoint)
    server.start()
    assert "gevent" not in sys.modules or sys.modules["gevent"] is None
    print("READY", flush=True)
    await server.run()


if __name__ == "__main__":
    if "--uvloop" in sys.argv:
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
