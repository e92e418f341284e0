"""The CLI's exit statuses, their help text, and the one-line failure report.

Every way the CLI ends maps to one of these numbers; ``--help`` lists them and
the tests rely on them. This module never decides which status applies.
"""
from __future__ import annotations

import sys

__all__ = [
    "EXIT_OK", "EXIT_REMOTE", "EXIT_USAGE", "EXIT_TIMEOUT", "EXIT_LOST", "EXIT_KWARGS",
    "EXIT_PROTOCOL", "EXIT_AUTH", "EXIT_INTERRUPTED", "EXIT_BROKEN_PIPE", "EXIT_STATUS_HELP", "fail",
]

EXIT_OK = 0
EXIT_REMOTE = 1        # the remote method raised (or the method does not exist)
EXIT_USAGE = 2         # bad option, bad JSON, bad endpoint, module that cannot be served
EXIT_TIMEOUT = 3       # no reply within --timeout
EXIT_LOST = 4          # the server went silent (no heartbeat) during the call
EXIT_KWARGS = 5        # keyword arguments sent to a server that cannot take them (zerorpc)
EXIT_PROTOCOL = 6      # the reply could not be understood (protocol error, other zrpc failure)
EXIT_AUTH = 7          # the server refused this client (CURVE key, IP rules), or wrong server key
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
EXIT_BROKEN_PIPE = 141  # stdout closed early, e.g. `| head` (128 + SIGPIPE)

EXIT_STATUS_HELP = """\
exit status:
  0    success
  1    the remote method raised an exception (or does not exist)
  2    usage error: bad option, bad JSON argument, bad endpoint, bad MODULE[:OBJECT]
  3    timeout: no reply within --timeout seconds
  4    lost the server: no heartbeat for two --heartbeat intervals
  5    keyword arguments (-k) sent to a server that cannot take them (plain zerorpc)
  6    the server's reply could not be understood (protocol error)
  7    authentication failed: the server refused this client, or wrong --curve-server-key
  130  interrupted (Ctrl-C); a stream being received is cancelled on the server
  141  stdout was closed early (e.g. piped into head)
"""


def fail(status: int, message: str) -> int:
    """Print ``zrpc: MESSAGE`` to stderr and return ``status``."""
    print(f"zrpc: {message}", file=sys.stderr, flush=True)
    return status
