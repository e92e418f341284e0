"""A real zerorpc 0.6.3 event peer (Publisher, Subscriber, Pusher or Puller), run in its own process.

    python tests/peers/zerorpc_events.py ROLE (--bind|--connect) ENDPOINT [--count N] [--interval S]

Roles:
  subscribe, pull   receive; print one JSON line per event: {"event": name, "args": [...]}, and
                    {"error": text} for every error zerorpc logs (an unknown method, say)
  publish           send tick(i, "zerorpc") every --interval seconds until killed (PUB
                    drops until a subscriber's subscription arrives: the test waits for one)
  push              send job(i) for i in range(--count), then keep running until killed
                    (PUSH queues until a puller connects, so none is lost)

Prints READY on stdout once its socket is bound or connected. Bytes are
printed as {"bytes": hex} so their type survives.
"""
import argparse
import json
import logging
import sys

import gevent
import zerorpc


def jsonable(value):
    if isinstance(value, bytes):
        return {"bytes": value.hex()}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def emit(record):
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


class Reporter(logging.Handler):
    """zerorpc logs a failing event (NameError, TypeError) with logger.exception: report it."""

    def emit(self, record):
        text = record.getMessage()
        if record.exc_info:
            text += " " + repr(record.exc_info[1])
        emit({"error": text})


class Handlers(object):
    """Methods zrpc senders call on this receiver; each prints what it got."""

    def tick(self, *args):
        emit({"event": "tick", "args": jsonable(list(args))})

    def job(self, *args):
        emit({"event": "job", "args": jsonable(list(args))})

    def data(self, *args):
        emit({"event": "data", "args": jsonable(list(args))})


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["subscribe", "pull", "publish", "push"])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--bind")
    where.add_argument("--connect")
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--interval", type=float, default=0.02)
    args = parser.parse_args()
    logging.getLogger().addHandler(Reporter())
    logging.getLogger().setLevel(logging.ERROR)

    node = {"subscribe": lambda: zerorpc.Subscriber(Handlers()),
            "pull": lambda: zerorpc.Puller(Handlers()),
            "publish": zerorpc.Publisher,
            "push": zerorpc.Pusher}[args.role]()
    if args.bind:
        node.bind(args.bind)
    else:
        node.connect(args.connect)
    print("READY", flush=True)
    if args.role in ("subscribe", "pull"):
        node.run()
    elif args.role == "publish":
        i = 0
        while True:
            node.tick(i, "zerorpc")
            i += 1
            gevent.sleep(args.interval)
    else:
        for i in range(args.count):
            node.job(i, {"from": "zerorpc"})
        while True:
            gevent.sleep(1)


if __name__ == "__main__":
    main()
