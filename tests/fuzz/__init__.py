"""zrpc's fault and fuzz suite: hostile frames and broken peers against a server in its own process.

Run it with ``make fuzz`` (or ``python -m tests.fuzz --help``); the normal test
suite runs a bounded smoke of it (tests/test_hostile.py). Nothing here mocks
the network: frames go over tcp on 127.0.0.1 to tests/peers/hostile_server.py.

* :mod:`.frames`: hypothesis strategies for real zerorpc events, and
  structure-aware mutations of them (at the msgpack level and the byte level).
* :mod:`.run`: the frame fuzzer: mutated frames from raw sockets, real calls
  from a well-behaved client checked alongside, and the server's health after.
* :mod:`.scenarios`: kill -9 of a server or a client mid-call, SIGSTOP of a
  client, a flood of calls against ``pool_size``; each checks its invariants.
"""
