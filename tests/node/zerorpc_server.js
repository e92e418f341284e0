// A real zerorpc-node 0.9.8 server, run in its own process for the interop tests.
//
//   node tests/node/zerorpc_server.js ENDPOINT [--heartbeat MS]
//
// Binds ENDPOINT, prints READY on stdout, serves until killed. Errors the
// server reports (a caller's heartbeats lost, bad events) are kept, and
// errors() returns them, so a test can check what zerorpc-node thought of
// a zrpc client. zerorpc-node reads each method's parameter names from its
// source, so methods are plain `function`s whose last parameter is `reply`.
"use strict";

const zerorpc = require("zerorpc");

const endpoint = process.argv[2];
if (!endpoint) {
    console.error("usage: zerorpc_server.js ENDPOINT [--heartbeat MS]");
    process.exit(2);
}
const at = process.argv.indexOf("--heartbeat");
const heartbeat = at === -1 ? 5000 : Number(process.argv[at + 1]);
const seenErrors = [];

const service = {
    add: function (a, b, reply) {
        reply(null, a + b);
    },
    echo: function (x, reply) {
        reply(null, x);
    },
    boom: function (reply) {
        throw new TypeError("boom from node");
    },
    boomLater: function (reply) {
        const error = new Error("later boom from node");
        error.name = "ValueError";
        setTimeout(() => reply(error), 10);
    },
    slow: function (seconds, reply) {
        setTimeout(() => reply(null, "slept " + seconds), seconds * 1000);
    },
    count: function (n, reply) {
        for (let i = 0; i < n; i++) reply(null, i, true);
        reply(null, undefined, false);
    },
    // n items, one every delayMs (the first at once), then the end of the stream.
    ticking: function (n, delayMs, reply) {
        let i = 0;
        const next = () => {
            if (i < n) {
                reply(null, i++, true);
                setTimeout(next, delayMs);
            } else {
                reply(null, undefined, false);
            }
        };
        next();
    },
    errors: function (reply) {
        reply(null, seenErrors);
    },
};

const server = new zerorpc.Server(service, heartbeat);
// Without a listener, an "error" event (e.g. a lost caller) would kill the process.
server.on("error", (error) => seenErrors.push(String(error)));
server.bind(endpoint);
process.stdout.write("READY\n");
