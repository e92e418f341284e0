"""Per-call state: what one call sets in contextvars or gevent.local never reaches another call.

zerorpc runs each call in a fresh greenlet; zrpc reuses idle greenlets (gevent)
and launches queued calls from the call that ended (asyncio), so both must
start every call with a fresh context. Real sockets, two real clients.
"""
import asyncio
import contextvars

import gevent
import gevent.event
import gevent.local

import zrpc
import zrpc.aio

from test_aio import run

TENANT = contextvars.ContextVar("tenant", default=None)
LOCAL = gevent.local.local()


class Tenants:
    def login(self, tenant):
        TENANT.set(tenant)
        LOCAL.tenant = tenant
        return tenant

    def whoami(self):
        return [TENANT.get(), getattr(LOCAL, "tenant", None)]

    def plain(self):
        return "no state"


def test_a_contextvar_set_by_one_call_is_not_seen_by_the_next_one(serve, client_factory):
    endpoint = serve(Tenants())
    alice, mallory = client_factory(endpoint, timeout=10), client_factory(endpoint, timeout=10)
    for _ in range(5):  # sequential calls: each one resumes the greenlet the previous one left idle
        TENANT.set(None)
        assert alice.login("alice") == "alice"
        assert mallory.whoami() == [None, None]
        assert alice.whoami() == [None, None]


def test_gevent_local_state_does_not_survive_a_reused_greenlet(serve, client_factory):
    endpoint = serve(Tenants())
    server = serve.servers[-1]
    client = client_factory(endpoint, timeout=10)
    assert client.plain() == "no state"
    assert len(server._idle_workers) == 1  # a clean greenlet is kept for the next call
    assert client.login("alice") == "alice"
    assert len(server._idle_workers) == 0  # one that holds gevent.local state is retired
    assert client.whoami() == [None, None]
    assert client.plain() == "no state"


def test_concurrent_calls_in_a_pool_each_start_clean(serve, client_factory):
    started = gevent.event.Event()

    class Slow(Tenants):
        def slow_login(self, tenant):
            self.login(tenant)
            started.set()
            gevent.sleep(0.2)
            return self.whoami()

    endpoint = serve(Slow(), pool_size=1)
    a, b = client_factory(endpoint, timeout=10), client_factory(endpoint, timeout=10)
    first = a.slow_login.call_async("alice")
    assert started.wait(10)
    queued = b.whoami.call_async()  # waits in line, then runs after slow_login
    assert first.get(timeout=10) == ["alice", "alice"]
    assert queued.get(timeout=10) == [None, None]


def test_aio_a_queued_call_does_not_inherit_the_context_of_the_call_before_it():
    async def main():
        started = asyncio.Event()

        async def login(tenant):
            TENANT.set(tenant)
            started.set()
            await asyncio.sleep(0.2)
            return TENANT.get()

        async def whoami():
            return TENANT.get()

        def whoami_in_thread():
            return TENANT.get()

        async with zrpc.aio.Server({"login": login, "whoami": whoami, "whoami_in_thread": whoami_in_thread},
                                   pool_size=1) as server:
            endpoint = server.bind("tcp://127.0.0.1:*")
            server.start()
            async with zrpc.aio.Client(endpoint, timeout=10) as a, zrpc.aio.Client(endpoint, timeout=10) as b:
                first = asyncio.ensure_future(a.login("alice"))
                await asyncio.wait_for(started.wait(), 10)
                # Both wait in line; the ending login() launches the first, whose end launches the second.
                queued = asyncio.ensure_future(b.whoami())
                await asyncio.sleep(0.05)
                queued_thread = asyncio.ensure_future(b.whoami_in_thread())
                assert await first == "alice"
                assert await queued is None
                assert await queued_thread is None
                assert await b.whoami() is None

    run(main())
