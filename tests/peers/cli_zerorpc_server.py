"""A real zerorpc 0.6.3 server for tests/test_cli.py. Usage: cli_zerorpc_server.py ENDPOINT; prints READY."""
import sys

import zerorpc


class Legacy(object):
    """Served by zerorpc itself (its _zerorpc_inspect fails on Python 3.11)."""

    def add(self, a, b):
        """Return a + b.

        Works on numbers and strings alike.
        """
        return a + b

    def hello(self, name):
        """Greet NAME."""
        return "Hello, %s!" % name

    @zerorpc.stream
    def count(self, n):
        """Stream 0 .. N-1."""
        return iter(range(int(n)))

    def fail(self):
        """Raise KeyError('missing')."""
        raise KeyError("missing")


def main():
    server = zerorpc.Server(Legacy(), name="legacy")
    server.bind(sys.argv[1])
    print("READY", flush=True)
    server.run()


if __name__ == "__main__":
    main()
