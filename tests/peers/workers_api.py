"""zrpc.Workers from Python, as the README shows it: serve, stop from a signal handler.

    workers_api.py ENDPOINT HEARTBEAT GRACE STOP_TIMEOUT

SIGTERM calls workers.stop(STOP_TIMEOUT) ("none": the grace). Prints READY once bound
and STOPPED when run() has returned; exits 0.
"""
import signal
import sys

import zrpc


def main() -> None:
    endpoint, heartbeat, grace, stop_timeout = sys.argv[1:5]
    timeout = None if stop_timeout == "none" else float(stop_timeout)
    workers = zrpc.Workers("workers_service:Service", 2, heartbeat=float(heartbeat), grace=float(grace))
    signal.signal(signal.SIGTERM, lambda *_: workers.stop(timeout))
    try:
        workers.bind(endpoint)
        print("READY", flush=True)
        workers.run()
        print("STOPPED", flush=True)
    finally:
        workers.close()


if __name__ == "__main__":
    main()
