"""Benchmarks of zrpc against zerorpc 0.6.3 and a hand-written zmq.green baseline, and of zrpc.aio.

Run ``python -m bench`` (``--quick`` for a smoke run under a minute, ``--help``
for options). Modules:

* ``runner``    the orchestrator: plans cases, runs them in child processes, prints the table
* ``servers``   one server process per framework (``python -m bench.servers FRAMEWORK``)
* ``workloads`` one client process per measurement (``python -m bench.workloads ...``)
* ``baseline``  the no-framework zmq.green DEALER/ROUTER client and server
* ``aio``       the asyncio side: zrpc.aio and a hand-written asyncio pyzmq baseline (servers, workloads)
* ``report``    medians, run-by-run ratios, the table and the targets (pure functions)
* ``procs``     /proc readers, fd limits and child-process cleanup
* ``balance``   on its own (``python -m bench.balance``): three servers, one slow, least in flight vs round robin

The orchestrator never imports gevent; only the children run event loops.
"""
