"""Serve on every core: N worker processes behind one endpoint. Run: python examples/workers.py

The same from a shell: zrpc serve --workers auto --bind tcp://127.0.0.1:4242 examples.workers:Service
(each worker is a fresh interpreter that imports ``examples.workers``: run from the repo's root).
"""
import os
import threading
import time

import gevent

import zrpc


class Service:
    """What every worker serves."""

    def work(self, n: int) -> int:
        """Some pure Python work (the kind one process cannot spread over cores); returns the worker's pid."""
        x = 0
        for i in range(int(n)):
            x += i * i
        return os.getpid()

    def caller(self) -> str:
        """Who is calling, as the worker sees it: the router passes the client's address on."""
        return zrpc.current_call().peer_address or "?"


def main() -> None:
    workers = zrpc.Workers("examples.workers:Service", workers=2, heartbeat=1, grace=5)
    endpoint = workers.bind("tcp://127.0.0.1:*")
    router = threading.Thread(target=workers.run)  # run() blocks: the router's poll loop
    router.start()
    try:
        with zrpc.Client(endpoint, timeout=10) as client:
            deadline = time.monotonic() + 30
            while not all(w["ready"] for w in client.call("_zrpc_status")["workers"]):
                if time.monotonic() > deadline:
                    raise SystemExit("the workers did not start")
                gevent.sleep(0.05)
            calls = [client.work.call_async(20_000) for _ in range(20)]  # concurrent: spread over both
            pids = {call.get() for call in calls}
            print(f"{len(pids)} worker processes served the calls")
            print(f"a worker sees the caller at {client.caller()}")
            status = client.call("_zrpc_status")
            print(f"served: {status['served']} calls")
    finally:
        workers.stop()  # drains every worker, as SIGTERM does for zrpc serve --workers
        router.join(timeout=30)
        workers.close()
    print("stopped")


if __name__ == "__main__":
    main()
