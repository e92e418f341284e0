"""Streams and batches, server and client in one process. Run: python examples/stream_and_batch.py"""
import gevent

import zrpc


class Feed:
    @zrpc.stream
    def squares(self, n: int):
        """Stream n squares, one at a time."""
        for i in range(n):
            yield i * i

    def add(self, a: int, b: int) -> int:
        return a + b


def main() -> None:
    with zrpc.Server(Feed()) as server:
        endpoint = server.bind("tcp://127.0.0.1:*")
        server.start()
        with zrpc.Client(endpoint, timeout=10) as client:
            # A stream: items arrive as they are produced; breaking out stops the server's generator.
            for square in client.squares(1_000_000):
                if square > 50:
                    break
                print("square", square)

            # A batch: 1,000 calls in flight at once, results in order, errors in their slots.
            batch = client.batch()
            for i in range(1000):
                batch.add(i, 1)
            batch.call("no_such_method")
            results = batch.run()
            print("batch", results[:3], "...", results[999], type(results[1000]).__name__)
    gevent.sleep(0)


if __name__ == "__main__":
    main()
