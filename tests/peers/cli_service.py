"""A service for tests/test_cli.py, served by the CLI itself: zrpc serve --bind EP cli_service:Service.

Set ZRPC_CLI_MARKERS to a directory: stream generators and slow calls write
marker files there, so a test can see (with a bounded poll) what the server did.
"""
import os

import gevent

import zrpc


def _mark(name: str, text: str = "") -> None:
    directory = os.environ.get("ZRPC_CLI_MARKERS")
    if directory:
        with open(os.path.join(directory, name), "w") as f:
            f.write(text)


class Service:
    """A service for testing the zrpc CLI."""

    def echo(self, *args, **kwargs):
        """Return [args, kwargs] exactly as received.

        Second line of the doc, only shown by METHOD --help.
        """
        return [list(args), kwargs]

    def kwonly(self, a, b=0, *, c=0):
        """Return a + b + c."""
        return a + b + c

    def blob(self, kind="binary"):
        """Return bytes: invalid UTF-8 (kind=binary) or valid UTF-8 (kind=text)."""
        return b"\xff\x00zrpc" if kind == "binary" else "h\u00e9llo".encode()

    def nested(self):
        """Return a dict with bytes inside and non-ASCII text."""
        return {"name": "caf\u00e9", "data": [b"ok", b"\xfe"], "n": 1}

    def slow(self, seconds, tag="slow"):
        """Write the marker TAG.started, sleep SECONDS, write TAG.done, return 'done'."""
        _mark(f"{tag}.started")
        gevent.sleep(float(seconds))
        _mark(f"{tag}.done")
        return "done"

    @zrpc.stream
    def ticks(self, interval=0.05, tag="ticks"):
        """Stream 0, 1, 2 ... forever, one item every INTERVAL seconds; TAG.closed marks the end."""
        i = 0
        try:
            while True:
                yield i
                if i == 0:
                    _mark(f"{tag}.started")
                i += 1
                gevent.sleep(float(interval))
        finally:
            _mark(f"{tag}.closed", str(i))

    @zrpc.stream
    def letters(self, text):
        """Stream the characters of TEXT."""
        return iter(text)

    def fail(self, message="as requested"):
        """Raise ValueError(MESSAGE)."""
        raise ValueError(message)
