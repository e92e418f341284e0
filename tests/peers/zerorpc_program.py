"""Typical zerorpc 0.6.3 code, run unchanged on zerorpc or on ``zrpc.compat``.

    ZERORPC_IMPL=zerorpc|compat [ZERORPC_HEARTBEAT=5] python tests/peers/zerorpc_program.py ROLE ENDPOINT

ROLE is ``server`` (prints READY, serves until killed), ``client`` (runs a
fixed sequence and prints one JSON line per step), ``puller`` (binds, prints
READY, then one JSON line per event, exits after 3) or ``pusher`` (pushes 3
events). Both sides register zerorpc middleware (task context and every
documented hook), so the output also shows which hooks ran, with what.
The same output is expected whichever implementation plays each role.
"""
import json
import os
import sys

if os.environ.get("ZERORPC_IMPL") == "compat":
    import zrpc.compat as zerorpc
else:
    import zerorpc

import gevent
import gevent.event


def say(*step):
    print(json.dumps(step), flush=True)


class ServerMiddleware(object):
    def __init__(self):
        self.journal = []

    def resolve_endpoint(self, endpoint):
        return endpoint.replace("tcp://svc:", "tcp://127.0.0.1:")

    def load_task_context(self, header):
        self.last_header = header
        self.journal.append(["load_task_context", header.get("task_id"), header.get("who")])

    def server_before_exec(self, request_event):
        self.journal.append(["server_before_exec", request_event.name, list(request_event.args)])
        if request_event.name == "echo":  # in place: the method gets the changed arguments
            request_event.args[0] = request_event.args[0].strip().lower()

    def server_after_exec(self, request_event, reply_event):
        self.journal.append(["server_after_exec", request_event.name, reply_event and reply_event.name])

    def server_inspect_exception(self, request_event, reply_event, task_context, exc_infos):
        self.journal.append(["server_inspect_exception", request_event.name,
                             reply_event and reply_event.name, exc_infos[0].__name__])


class ClientMiddleware(object):
    def __init__(self):
        self.journal = []

    def get_task_context(self):
        return {"task_id": "t-42"}

    def client_before_request(self, event):
        event.header["who"] = "client"
        self.journal.append(["client_before_request", event.name, list(event.args)])

    def client_after_request(self, request_event, reply_event, exception):
        self.journal.append(["client_after_request", request_event.name,
                             reply_event and reply_event.name, exception and type(exception).__name__])

    def client_handle_remote_error(self, event):
        name, message, _ = event.args
        if name == "KeyError":
            return LookupError("mapped by middleware: " + message)
        return None


class RichMiddleware(object):
    """A second client's: task context values that are not scalars, the request and reply headers,
    and an after-request hook that blocks (gevent I/O) or raises."""

    def __init__(self):
        self.journal = []

    def get_task_context(self):
        return {"trace": {"id": 7, "parent": None}, "tags": ["a", "b"]}

    def client_before_request(self, event):
        self.journal.append(["before", event.name, len(event.header["message_id"]), event.header["v"]])

    def client_after_request(self, request_event, reply_event, exception):
        gevent.sleep(0.01)  # e.g. shipping a span over the network
        if reply_event is not None:
            self.journal.append(["after", request_event.name, reply_event.header["v"],
                                 reply_event.header["response_to"] == request_event.header["message_id"]])
        if request_event.args and request_event.args[0] == "hook fails":
            raise RuntimeError("the hook failed")


class Service(object):
    def add(self, a, b):
        """Add two numbers."""
        return a + b

    @zerorpc.stream
    def count(self, n):
        return iter(range(n))

    def fail(self):
        raise ValueError("bad value")

    def lookup(self, key):
        return {}[key]

    def slow(self, seconds):
        gevent.sleep(seconds)
        return seconds

    def echo(self, value):
        return value

    @zerorpc.stream
    def pause_stream(self, seconds):
        yield "first"
        gevent.sleep(seconds)  # items that come when something happens
        yield "second"

    def last_context(self):
        return [middleware.last_header.get("trace"), middleware.last_header.get("tags")]

    # Named like zrpc.Client's attributes: zerorpc's Client has none of them.
    def timeout(self):
        return "timeout"

    def call(self, value):
        return ["call", value]

    def batch(self):
        return "batch"

    def with_options(self):
        return "with_options"

    def heartbeat(self):
        return "heartbeat"

    def journal(self):
        entries = list(middleware.journal)
        del middleware.journal[:]
        return entries


class Worker(object):
    def __init__(self):
        self.done = gevent.event.Event()
        self.count = 0

    def resize(self, name, size):
        say("event", "resize", name, size)
        self.count += 1
        if self.count == 3:
            self.done.set()


role, endpoint = sys.argv[1], sys.argv[2]
if role in ("server", "puller"):
    middleware = ServerMiddleware()
else:
    middleware = ClientMiddleware()
zerorpc.Context.get_instance().register_middleware(middleware)

if role == "server":
    server = zerorpc.Server(Service(), heartbeat=float(os.environ.get("ZERORPC_HEARTBEAT", 5)))
    server.bind(endpoint)
    print("READY", flush=True)
    server.run()
elif role == "client":
    client = zerorpc.Client(timeout=10)
    client.connect(endpoint)
    say("add", client.add(1, 2))
    say("call", client("add", 2, 3))
    say("async", client.add(3, 4, **{"async": True}).get())
    say("stream", list(client.count(3)))
    try:
        client.fail()
    except zerorpc.RemoteError as e:
        say("remote error", e.name, e.msg)
    try:
        client.lookup("k")
    except LookupError as e:
        say("mapped error", type(e).__name__, str(e))
    say("server journal", client.journal())
    say("client journal", middleware.journal)
    try:
        client.slow(5, timeout=0.5)
    except zerorpc.TimeoutExpired:
        say("timeout", "TimeoutExpired")
    say("after timeout", middleware.journal[-1])
    say("normalised by server_before_exec", client.echo("  HeLLo "))
    say("zrpc.Client names", client.timeout(), client.call(1), client.batch(), client.with_options(),
        client.heartbeat())
    say("exceptions module", zerorpc.exceptions.RemoteError is zerorpc.RemoteError)
    quick = zerorpc.Client(timeout=0.5)
    quick.connect(endpoint)
    say("stream items further apart than the timeout", list(quick.pause_stream(1.0)))
    quick.close()
    rich_context = zerorpc.Context()
    rich = zerorpc.Client(context=rich_context, timeout=10)
    rich_middleware = RichMiddleware()
    rich_context.register_middleware(rich_middleware)
    rich.connect(endpoint)
    say("task context values", rich.last_context())
    say("async, blocking hook", rich.echo("x", **{"async": True}).get(timeout=10))
    try:
        rich.echo("hook fails", **{"async": True}).get(timeout=10)
    except RuntimeError as e:
        say("async, raising hook", str(e))
    say("rich journal", rich_middleware.journal)
    rich.close()
    client.close()
elif role == "puller":
    import gevent.event
    worker = Worker()
    puller = zerorpc.Puller(worker)
    puller.bind(endpoint.replace("tcp://127.0.0.1:", "tcp://svc:"), resolve=True)  # resolve_endpoint
    gevent.spawn(puller.run)
    print("READY", flush=True)
    worker.done.wait(30)
    say("journal", middleware.journal)
    say("direct call", puller("resize", "d.png", 40))
    puller.close()
elif role == "pusher":
    pusher = zerorpc.Pusher()
    pusher.connect(endpoint, resolve=False)
    pusher.resize("a.png", 10)
    pusher("resize", "b.png", 20)
    pusher.resize("c.png", 30)
    gevent.sleep(0)
    pusher.close()
