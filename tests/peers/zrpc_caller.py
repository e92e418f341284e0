"""A zrpc client in its own process, for tests that kill or freeze the caller mid-call.

Usage: zrpc_caller.py ENDPOINT HEARTBEAT METHOD [ARGS...] (args are JSON). Prints
READY once connected (after one ping), then CALLING, then makes the call.
"""
import json
import sys

import zrpc


def main() -> None:
    endpoint, heartbeat, method = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    args = [json.loads(a) for a in sys.argv[4:]]
    client = zrpc.Client(endpoint, heartbeat=heartbeat, timeout=120)
    client._zerorpc_ping()
    print("READY", flush=True)
    print("CALLING", flush=True)
    result = client.call(method, *args)
    print("RESULT", json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
