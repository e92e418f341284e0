"""A batch of calls, server and client in one process. Run: python examples/batch.py"""
import zrpc


def add(a: int, b: int) -> int:
    return a + b


def main() -> None:
    with zrpc.Server({"add": add}) as server:
        endpoint = server.bind("tcp://127.0.0.1:*")
        server.start()
        with zrpc.Client(endpoint, timeout=10) as client:
            # 1,000 calls in flight at once, results in order, an error in its own slot.
            batch = client.batch()
            for i in range(1000):
                batch.add(i, 1)
            batch.call("no_such_method")
            results = batch.run()
            print("batch", results[:3], "...", results[999], type(results[1000]).__name__)


if __name__ == "__main__":
    main()
