"""zerorpc code on zrpc: change one import, keep the rest (middleware included).

Run: python examples/from_zerorpc.py
"""
import gevent

import zrpc.compat as zerorpc  # was: import zerorpc


class RequestIds(object):
    """zerorpc middleware: the client stamps a request id, the server reads it."""

    def __init__(self):
        self.current = None

    def get_task_context(self):
        return {"request_id": "req-1"}

    def load_task_context(self, header):
        self.current = header.get("request_id")


ids = RequestIds()
zerorpc.Context.get_instance().register_middleware(ids)


class Cooler(object):
    """A zerorpc service, unchanged."""

    def add(self, a, b):
        return a + b

    def whoami(self):
        return ids.current

    @zerorpc.stream
    def countdown(self, n):
        return iter(range(n, 0, -1))


server = zerorpc.Server(Cooler())
endpoint = server.bind("tcp://127.0.0.1:*")  # zrpc returns the endpoint bound (a free port here)
gevent.spawn(server.run)

client = zerorpc.Client()
client.connect(endpoint)
print(client.add(1, 2))
print(client.add(3, 4, **{"async": True}).get())   # zerorpc's spelling of async
print(list(client.countdown(3)))
print(client.whoami())
try:
    client.nope()
except zerorpc.RemoteError as e:
    print("RemoteError", e.name)
client.close()
server.close()
