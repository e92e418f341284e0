"""One replica of a service, in its own process, for balancing tests that stop, freeze or kill it.

Usage: zrpc_replica.py bind|connect ENDPOINT [HEARTBEAT] [--delay SECONDS] [--grace SECONDS]

``bind`` serves on ENDPOINT; ``connect`` connects to a client that bound
ENDPOINT (the reverse topology). Every call of ``echo`` and ``whoami``
takes ``--delay`` seconds. SIGTERM stops the server as ``zrpc serve`` does:
calls in flight get ``--grace`` seconds, new ones get ServerStopping, then
the process exits.
"""
import os
import signal
import sys

import gevent

import zrpc


def main() -> None:
    args = sys.argv[1:]
    options = {"--delay": 0.0, "--grace": 10.0}
    for flag in options:
        if flag in args:
            at = args.index(flag)
            options[flag] = float(args[at + 1])
            del args[at:at + 2]
    mode, endpoint = args[0], args[1]
    heartbeat = float(args[2]) if len(args) > 2 else 5.0
    delay = options["--delay"]

    class Replica:
        def echo(self, x):
            if delay:
                gevent.sleep(delay)
            return x

        def whoami(self):
            if delay:
                gevent.sleep(delay)
            return os.getpid()

        def sleep(self, seconds):
            gevent.sleep(seconds)
            return os.getpid()

        @zrpc.stream
        def count(self, n):
            return range(n)

    server = zrpc.Server(Replica(), heartbeat=heartbeat)
    if mode == "bind":
        server.bind(endpoint)
    else:
        server.connect(endpoint)
    gevent.signal_handler(signal.SIGTERM, lambda: gevent.spawn(server.stop, options["--grace"]))
    server.start()
    print("READY", flush=True)
    server.run()
    server.close()


if __name__ == "__main__":
    main()
