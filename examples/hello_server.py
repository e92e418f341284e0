"""A small zrpc service. Run: python examples/hello_server.py [ENDPOINT]

Also servable without this __main__ block: zrpc serve --bind ENDPOINT examples.hello_server:Hello
"""
import sys

import gevent

import zrpc


class Hello:
    """Greets, adds and counts."""

    def hello(self, name: str = "world") -> str:
        """Return a greeting for NAME."""
        return f"Hello, {name}!"

    def add(self, a: float, b: float) -> float:
        """Return a + b."""
        return a + b

    def search(self, first_name: str = "", *, last_name: str = "") -> list:
        """Find people by name (keyword arguments work)."""
        people = [("Guido", "van Rossum"), ("Monty", "Python"), ("Brian", "Python")]
        return [f"{f} {l}" for f, l in people
                if (not first_name or f == first_name) and (not last_name or l == last_name)]

    def sleep(self, seconds: float) -> float:
        """Sleep SECONDS without blocking other calls, then return them."""
        gevent.sleep(seconds)
        return seconds

    @zrpc.stream
    def count(self, n: int):
        """Stream the numbers 0 .. N-1."""
        for i in range(n):
            yield i

    def fail(self, message: str = "as requested") -> None:
        """Raise ValueError(MESSAGE)."""
        raise ValueError(message)


def main(endpoint: str = "tcp://127.0.0.1:4242") -> None:
    with zrpc.Server(Hello(), name="hello") as server:
        print("serving on", server.bind(endpoint), flush=True)
        server.run()


if __name__ == "__main__":
    main(*sys.argv[1:2])
