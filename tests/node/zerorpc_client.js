// A real zerorpc-node 0.9.8 client, run in its own process against a zrpc server.
//
//   node tests/node/zerorpc_client.js ENDPOINT CALLS_JSON [--heartbeat MS] [--timeout S]
//
// CALLS_JSON is a list of {"check": NAME, "method": M, "args": [...]}; all the
// calls start at once, each on its own channel. An argument {"bytes": HEX}
// is sent as a Buffer (msgpack bin). Prints one JSON line per call once it
// ends: {"check", "value" | "error": {name, message, stack}, "items",
// "elapsed"} where "items" counts stream items (a stream's value is the list
// of items) and "elapsed" is in seconds; Buffers come back as {"bytes": HEX}.
// A failed call is a result to report: the exit code is 0 whenever every
// call ended, 2 for a bad command line.
"use strict";

const zerorpc = require("zerorpc");

function option(name, fallback) {
    const at = process.argv.indexOf(name);
    return at === -1 ? fallback : Number(process.argv[at + 1]);
}

function fromJson(value) {
    if (Array.isArray(value)) return value.map(fromJson);
    if (value && typeof value === "object") {
        if (typeof value.bytes === "string") return Buffer.from(value.bytes, "hex");
        const out = {};
        for (const key of Object.keys(value)) out[key] = fromJson(value[key]);
        return out;
    }
    return value;
}

function toJson(value) {
    if (Buffer.isBuffer(value)) return { bytes: value.toString("hex") };
    if (Array.isArray(value)) return value.map(toJson);
    if (value && typeof value === "object") {
        const out = {};
        for (const key of Object.keys(value)) out[key] = toJson(value[key]);
        return out;
    }
    return value;
}

const [endpoint, callsJson] = process.argv.slice(2);
if (!endpoint || !callsJson) {
    console.error("usage: zerorpc_client.js ENDPOINT CALLS_JSON [--heartbeat MS] [--timeout S]");
    process.exit(2);
}
const calls = JSON.parse(callsJson);
const client = new zerorpc.Client({
    heartbeatInterval: option("--heartbeat", 5000),
    timeout: option("--timeout", 30),
});
client.on("error", (error) => console.error("client error:", error));
client.connect(endpoint);

let pending = calls.length;
for (const spec of calls) {
    const started = Date.now();
    const items = [];
    let done = false;
    const finish = (record) => {
        if (done) return;
        done = true;
        record.check = spec.check;
        record.items = items.length;
        record.elapsed = (Date.now() - started) / 1000;
        process.stdout.write(JSON.stringify(record) + "\n");
        if (--pending === 0) {
            client.close();
        }
    };
    client.invoke(spec.method, ...fromJson(spec.args || []), (error, result, more) => {
        if (error) {
            finish({ error: { name: error.name, message: error.message, stack: String(error.stack) } });
        } else if (more) {
            items.push(result);  // a STREAM item
        } else if (items.length || result === undefined) {
            finish({ value: toJson(items) });  // STREAM_DONE (or an empty stream)
        } else {
            finish({ value: toJson(result) });  // OK
        }
    });
}
if (pending === 0) client.close();
