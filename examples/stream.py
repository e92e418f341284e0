"""A stream, server and client in one process. Run: python examples/stream.py"""
import zrpc


class Feed:
    @zrpc.stream
    def squares(self, n: int):
        """Stream n squares, one at a time."""
        try:
            for i in range(n):
                yield i * i
        finally:
            print("generator stopped")  # runs as soon as the client stops reading


def main() -> None:
    with zrpc.Server(Feed()) as server:
        endpoint = server.bind("tcp://127.0.0.1:*")
        server.start()
        with zrpc.Client(endpoint, timeout=10) as client:
            # Items arrive as they are produced; breaking out stops the server's generator.
            for square in client.squares(1_000_000):
                if square > 50:
                    break
                print("square", square)
            print(sum(client.squares(1000)))


if __name__ == "__main__":
    main()
