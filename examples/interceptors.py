"""Interceptors, headers, deadlines and metrics. Run: python examples/interceptors.py

A server interceptor authorises callers by a header and times calls; a
client interceptor adds the header; a call made inside a call inherits what
remains of its deadline; Prometheus metrics (if prometheus_client is
installed) count every call. Everything in one process for the example's sake.
"""
import gevent

import zrpc


def require_tenant(call, proceed):
    """Reject calls without a tenant header: the caller gets a RemoteError(PermissionError)."""
    if "tenant" not in call.headers:
        raise PermissionError(f"{call.method}() needs a tenant header")
    return proceed()


def main() -> None:
    timings = []

    def timed(call, proceed):
        call.add_done_callback(lambda over: timings.append((over.method, over.outcome)))
        return proceed()

    class Inventory:
        def count(self, item):
            call = zrpc.current_call()
            return f"{call.headers['tenant']} has 3 {item}"

        def slow_report(self):
            # This call's deadline is the caller's timeout; the nested call gets what remains.
            return backend.sleep_long()

    class Backend:
        def sleep_long(self):
            gevent.sleep(30)

    try:
        from zrpc.metrics import ServerMetrics
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry()
        metrics = [ServerMetrics(registry=registry)]
    except ImportError:  # pip install 'zrpc[metrics]'
        metrics = []

    with zrpc.Server(Backend()) as backend_server, \
            zrpc.Server(Inventory(), interceptors=[*metrics, timed, require_tenant]) as server:
        backend_endpoint = backend_server.bind("tcp://127.0.0.1:*")
        backend_server.start()
        backend = zrpc.Client(backend_endpoint, timeout=60)
        if metrics:
            metrics[0].watch(server)
        endpoint = server.bind("tcp://127.0.0.1:*")
        server.start()

        def add_tenant(call, proceed):
            call.headers.setdefault("tenant", "acme")
            return proceed()

        with zrpc.Client(endpoint, timeout=10, interceptors=[add_tenant]) as client, \
                zrpc.Client(endpoint, timeout=10) as anonymous:
            print(client.count("apples"))
            print(client.with_options(headers={"tenant": "globex"}).count("pears"))
            try:
                anonymous.count("plums")
            except zrpc.RemoteError as exc:
                print("refused:", exc)
            try:
                client.with_options(timeout=0.5).slow_report()
            except zrpc.TimeoutExpired:
                print("slow_report: timed out after 0.5s, and so did its call to the backend")
        backend.close()
        gevent.sleep(0.1)  # let the last done callbacks run
        # (slow_report's outcome is "cancelled" or "error": its caller's cancel and its own
        # nested call's timeout race each other)
        print("calls:", sorted(t for t in timings if t[0] == "count"))
        if metrics:
            for line in generate_latest(registry).decode().splitlines():
                if line.startswith('zrpc_server_calls_total{method="count"'):
                    print(line)


if __name__ == "__main__":
    main()
