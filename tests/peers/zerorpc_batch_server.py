"""A real zerorpc 0.6.3 server (separate process) for batch interop. Usage: zerorpc_batch_server.py ENDPOINT"""
import sys

import zerorpc


class Service:
    def add(self, a, b):
        return a + b

    def fail(self, message):
        raise ValueError(message)


def main() -> None:
    server = zerorpc.Server(Service())
    server.bind(sys.argv[1])
    print("READY", flush=True)
    server.run()


if __name__ == "__main__":
    main()
