"""A zrpc server whose quit() reply is the last thing it sends before its process exits.

Usage: zrpc_quit_server.py ENDPOINT. quit(value) returns value and stops the
server; main then closes it and the process exits at once, so the reply only
arrives if close() flushed it.
"""
import sys

import gevent

import zrpc


def main() -> None:
    server: zrpc.Server

    def quit(value):
        gevent.spawn(server.stop, 5)
        return value

    server = zrpc.Server({"quit": quit})
    server.bind(sys.argv[1])
    print("READY", flush=True)
    server.run()
    server.close()


if __name__ == "__main__":
    main()
