"""A real zerorpc 0.6.3 client, run in its own process against a zrpc server.

    python tests/peers/zerorpc_client.py ENDPOINT SCENARIO [ARG...] [--heartbeat N] [--timeout S] [--passive]

Prints one JSON object per check on stdout: {"check": NAME, "value": ...} or
{"check": NAME, "error": {"type", "name", "msg", "traceback"}}. A failing call
is a result to report, not a crash: the exit code is 0 whenever the scenario
ran to its end, 2 for a bad command line. The test process does the asserting.
"""
import argparse
import json
import logging
import os
import sys
import time

import gevent
import zerorpc

SCENARIOS = {}


def scenario(func):
    SCENARIOS[func.__name__] = func
    return func


def jsonable(value):
    """Results as JSON; bytes become {"bytes": hex} so their type survives the trip."""
    if isinstance(value, bytes):
        return {"bytes": value.hex()}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def report(check, value=None, error=None, **extra):
    record = {"check": check}
    if error is not None:
        record["error"] = {
            "type": type(error).__name__,
            "name": getattr(error, "name", None),
            "msg": getattr(error, "msg", None),
            "traceback": getattr(error, "traceback", None),
            "str": str(error)[-2000:],
        }
    else:
        record["value"] = jsonable(value)
    record.update(extra)
    print(json.dumps(record), flush=True)


def check(name, func, *args):
    started = time.monotonic()
    try:
        value = func(*args)
    except Exception as exc:
        report(name, error=exc, elapsed=time.monotonic() - started)
    else:
        report(name, value, elapsed=time.monotonic() - started)


@scenario
def basic(client, args):
    check("add", client.add, 10, 20)
    check("echo_str", client.echo, "héllo ✓")
    check("echo_bytes", client.echo, b"\x00\xff")
    check("echo_nested", client.echo, {"l": [1, 2.5, None, True, False], "n": -(2 ** 40), "s": "x"})
    check("greet_default", client.greet, "bob")
    check("greet", client.greet, "bob", "hi")
    big = b"\x01" * 5000000
    check("echo_big", lambda: client.echo(big) == big)


@scenario
def concurrent(client, args):
    n = int(args[0])
    started = time.monotonic()
    # `async` is a keyword since Python 3.7: zerorpc's option must go through **.
    futures = [client("add", i, i, **{"async": True}) for i in range(n)]
    results = []
    for future in futures:
        try:
            results.append(future.get())
        except Exception as exc:
            results.append("%s: %s" % (type(exc).__name__, exc))
    report("concurrent", results, elapsed=time.monotonic() - started)


@scenario
def errors(client, args):
    check("boom", client.boom)
    check("unknown", client.no_such_method, 1)
    check("bad_arity", client.add, 1)
    check("after_errors", client.add, 1, 1)  # the connection is still usable


@scenario
def builtins(client, args):
    check("ping", client._zerorpc_ping)
    check("list", client._zerorpc_list)
    check("name", client._zerorpc_name)
    check("help", client._zerorpc_help, "greet")
    check("args", client._zerorpc_args, "greet")
    check("inspect", client._zerorpc_inspect)

    def cli_inspect():
        # What `zerorpc tcp://... --inspect` runs (without its printing).
        import zerorpc.cli

        longest, methods, service = zerorpc.cli.zerorpc_inspect(client)
        return {"service": service, "methods": [list(m) for m in methods]}

    check("cli_inspect", cli_inspect)


@scenario
def stream(client, args):
    n = int(args[0])
    pause_at = {int(a) for a in args[1:]}

    def read():
        items = []
        for item in client.count(n):
            items.append(item)
            if len(items) in pause_at:
                # Stop reading a while: a sender that ignores zerorpc's credit
                # (100 slots) overflows its queue now, which zerorpc treats as fatal.
                gevent.sleep(0.3)
        return items

    check("stream", read)
    check("empty_stream", lambda: list(client.count(0)))
    check("after_stream", client.add, 2, 2)


@scenario
def stream_error(client, args):
    n = int(args[0])
    items = []
    started = time.monotonic()
    try:
        for item in client.count_then_fail(n):
            items.append(item)
    except Exception as exc:
        report("stream_error", error=exc, items=items, elapsed=time.monotonic() - started)
    else:
        report("stream_error", "no error", items=items, elapsed=time.monotonic() - started)


def wait_for_file(path, limit=30):
    """Block (cooperatively, bounded) until the test process creates ``path``."""
    deadline = time.monotonic() + limit
    while not os.path.exists(path) and time.monotonic() < deadline:
        gevent.sleep(0.02)
    return os.path.exists(path)


@scenario
def stream_break(client, args):
    """stream_break N RELEASE_PATH: read N items of endless(), close it, wait for RELEASE_PATH, call add."""
    n, release = int(args[0]), args[1]
    stream = client.endless()
    items = [next(stream) for _ in range(n)]
    stream.close()  # zerorpc's iterator closes its channel: its heartbeats stop
    # time.monotonic() is CLOCK_MONOTONIC, the same clock in every process of this machine.
    report("stream_break", items, closed_at=time.monotonic())
    report("released", wait_for_file(release))
    # Not `client`: zerorpc 0.6.3's own client wedges after an early close (its
    # dispatcher blocks forever on the closed channel's full queue when the
    # items already in flight arrive), whatever the server, zerorpc's included.
    fresh = new_client()
    check("after_break", fresh.add, 3, 3)
    fresh.close()


@scenario
def slow_timeout(client, args):
    """slow_timeout SECONDS TIMEOUT RELEASE_PATH: a call that times out on the zerorpc side."""
    seconds, timeout, release = float(args[0]), float(args[1]), args[2]
    check("slow_timeout", lambda: client.slow(seconds, timeout=timeout))
    report("released", wait_for_file(release))
    check("after_timeout", client.add, 4, 4)


@scenario
def slow(client, args):
    """slow SECONDS [N]: N calls of slow(SECONDS) at once; one check per call (slow, slow1...)."""
    seconds = float(args[0])
    n = int(args[1]) if len(args) > 1 else 1
    greenlets = [gevent.spawn(check, "slow%s" % (i or ""), client.slow, seconds) for i in range(n)]
    gevent.joinall(greenlets)


OPTIONS = None


@scenario
def middleware_headers(client, args):
    """A zerorpc middleware's task context travels as extra header keys: zrpc shows them as headers."""
    class Tenant(object):
        def get_task_context(self):
            return {"tenant": "acme", "request_no": 7}

    context = zerorpc.Context()
    context.register_middleware(Tenant())
    with_context = zerorpc.Client(timeout=OPTIONS.timeout, heartbeat=OPTIONS.heartbeat, context=context)
    with_context.connect(OPTIONS.endpoint)
    check("headers", with_context.headers_seen)
    check("add", with_context.add, 1, 2)
    with_context.close()


def new_client():
    client = zerorpc.Client(timeout=OPTIONS.timeout, heartbeat=OPTIONS.heartbeat,
                            passive_heartbeat=OPTIONS.passive)
    client.connect(OPTIONS.endpoint)
    return client


def main():
    global OPTIONS
    parser = argparse.ArgumentParser()
    parser.add_argument("endpoint")
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("args", nargs="*")
    parser.add_argument("--heartbeat", type=float, default=5)
    parser.add_argument("--timeout", type=float, default=10)
    parser.add_argument("--passive", action="store_true",
                        help="passive heartbeat, as the zerorpc CLI uses by default")
    OPTIONS = options = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)  # stderr: read by the test after exit

    client = new_client()
    SCENARIOS[options.scenario](client, options.args)
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
