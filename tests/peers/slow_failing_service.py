"""A service whose start-up fails slowly once a marker file exists (a big import, a DB connect timing out).

The marker's path is in $ZRPC_TEST_FAIL_MARK; without the file the service starts at once.
"""
import os
import time

if os.path.exists(os.environ.get("ZRPC_TEST_FAIL_MARK", "/nonexistent")):
    time.sleep(1.2)
    raise RuntimeError("database unreachable")


class Service:
    def pid(self):
        return os.getpid()
