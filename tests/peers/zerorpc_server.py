"""A real zerorpc 0.6.3 server, run in its own process for the interop tests.

    python tests/peers/zerorpc_server.py ENDPOINT [--heartbeat N] [--getargspec-shim] [--log PATH]

Binds ENDPOINT, prints READY on stdout, serves until killed. zerorpc keeps its
own gevent zmq wrapper and a global context, which is why it never runs in the
test process.

Besides its methods, the peer records every event zerorpc's socket receives
(name and header, not args): ``seen()`` returns them, so a test can check what
a zrpc client really put on the wire.
"""
import argparse
import collections
import inspect
import logging
import os
import sys

import gevent
import zerorpc
import zerorpc.events

# -- what this zerorpc server received, for seen() -----------------------------
_SEEN = collections.deque(maxlen=20000)
_original_recv = zerorpc.events.Events.recv


def _recording_recv(self, timeout=None):
    event = _original_recv(self, timeout=timeout)
    header = event.header

    def kind(value):
        return None if value is None else type(value).__name__

    _SEEN.append([event.name, sorted(header), header.get("v"),
                  kind(header.get("message_id")), kind(header.get("response_to"))])
    return event


zerorpc.events.Events.recv = _recording_recv


# -- the service ----------------------------------------------------------------
def add(a, b):
    """Add two numbers."""
    return a + b


def echo(x):
    return x


def greet(name, greeting="hello"):
    """Greet someone.

    The greeting defaults to hello.
    """
    return "%s %s" % (greeting, name)


def boom():
    raise ValueError("boom from zerorpc")


def slow(seconds, started_path=None):
    """Sleep (cooperatively) for ``seconds``; touch ``started_path`` first if given."""
    if started_path:
        _write(started_path, "started")
    gevent.sleep(seconds)
    return "slept %s" % seconds


@zerorpc.stream
def count(n):
    return iter(range(n))


@zerorpc.stream
def count_then_fail(n):
    for i in range(n):
        yield i
    raise ValueError("stream broke after %d items" % n)


@zerorpc.stream
def endless(marker_path=None, delay=0.0):
    """Yield 0, 1, 2... forever; write marker_path (if any) when the generator stops, however it stops."""
    produced = 0
    how = "returned"
    try:
        while True:
            yield produced
            produced += 1
            gevent.sleep(delay)
    except BaseException as exc:  # GeneratorExit, LostRemote...: record it and let it go on
        how = type(exc).__name__
        raise
    finally:
        if marker_path:
            _write(marker_path, "%s %d" % (how, produced))


def seen():
    """The events this server has received: [name, header keys, v, message_id type, response_to type]."""
    return list(_SEEN)


def _write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)  # readers never see a half-written marker


def _install_getargspec_shim():
    # zerorpc 0.6.3 answers _zerorpc_args/_zerorpc_inspect with inspect.getargspec,
    # which Python 3.11 removed. This shim, built from getfullargspec, exists in
    # this peer process only, so those built-ins can be exercised at all.
    ArgSpec = collections.namedtuple("ArgSpec", "args varargs keywords defaults")

    def getargspec(func):
        spec = inspect.getfullargspec(func)
        return ArgSpec(spec.args, spec.varargs, spec.varkw, spec.defaults)

    inspect.getargspec = getargspec


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("endpoint")
    parser.add_argument("--heartbeat", type=float, default=5)
    parser.add_argument("--getargspec-shim", action="store_true")
    parser.add_argument("--log", default=None, help="zerorpc's log file (default: no log)")
    args = parser.parse_args()

    # zerorpc logs a traceback per error and a warning per stray heartbeat; an
    # unread stderr pipe could fill up and freeze this process, so log to a file.
    if args.log:
        logging.basicConfig(filename=args.log, level=logging.INFO)
    else:
        logging.getLogger().addHandler(logging.NullHandler())
    if args.getargspec_shim:
        _install_getargspec_shim()

    methods = {f.__name__: f for f in (add, echo, greet, boom, slow, seen)}
    methods.update(count=count, count_then_fail=count_then_fail, endless=endless)
    server = zerorpc.Server(methods, name="zerorpc_peer", heartbeat=args.heartbeat)
    server.bind(args.endpoint)
    print("READY", flush=True)
    server.run()


if __name__ == "__main__":
    sys.exit(main())
