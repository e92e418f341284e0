"""Make COUNT CURVE handshakes that the server refuses, one after another, then print DONE.

Usage: bad_handshakes.py ENDPOINT SERVER_PUBLIC_KEY COUNT. Each handshake uses a
fresh client key the server does not know; the socket is closed as soon as its
monitor reports the refusal (or after 5 s). Prints READY first, then
"DONE <refused> <timed_out>".
"""
import sys
import time

import zmq

ENDPOINT, SERVER_KEY, COUNT = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3])


def main() -> None:
    ctx = zmq.Context()
    print("READY", flush=True)
    refused = timed_out = 0
    for _ in range(COUNT):
        public, secret = zmq.curve_keypair()
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = SERVER_KEY, public, secret
        monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_SUCCEEDED)
        sock.connect(ENDPOINT)
        deadline = time.monotonic() + 5
        outcome = None
        while outcome is None and time.monotonic() < deadline:
            if monitor.poll(100):
                event = int.from_bytes(monitor.recv_multipart()[0][:2], "little")
                outcome = event
        if outcome == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            refused += 1
        else:
            timed_out += 1
        sock.disable_monitor()
        monitor.close(0)
        sock.close(0)
    print(f"DONE {refused} {timed_out}", flush=True)
    ctx.term()


if __name__ == "__main__":
    main()
