"""Call the hello service. Run: python examples/hello_client.py [ENDPOINT]"""
import sys

import gevent

import zrpc


def main(endpoint: str = "tcp://127.0.0.1:4242") -> None:
    with zrpc.Client(endpoint, timeout=10) as client:
        print(client.hello("zrpc"))                    # Hello, zrpc!
        print(client.add(10, 20))                      # 30
        print(client.search(last_name="Python"))       # keyword arguments
        # Async: fire many calls at once, then collect.
        futures = [client.sleep.call_async(0.5) for _ in range(100)]
        gevent.joinall(futures, raise_error=True)
        print(sum(f.get() for f in futures))           # 50.0, after ~0.5 s, not 50 s
        print(list(client.count(5)))                   # a stream: [0, 1, 2, 3, 4]
        try:
            client.fail("boom")
        except zrpc.RemoteError as exc:
            print(f"remote {exc.name}: {exc.msg}")     # remote ValueError: boom
        try:
            client.with_options(timeout=0.2).sleep(5)
        except zrpc.TimeoutExpired as exc:
            print("timeout:", exc)


if __name__ == "__main__":
    main(*sys.argv[1:2])
