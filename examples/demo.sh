#!/bin/sh
# A tour of the zrpc command line (run by `make demo`): serve the Hello class of
# examples/hello_server.py without writing any server code, call it, stop it.
# Needs the zrpc command on PATH and the repository root as the current directory.
set -eu

ENDPOINT="tcp://127.0.0.1:${ZRPC_DEMO_PORT:-4242}"
SERVER=""

cleanup() {
    # Whatever happens (error, Ctrl-C), never leave the demo server behind.
    if [ -n "$SERVER" ] && kill -0 "$SERVER" 2>/dev/null; then
        kill -TERM "$SERVER" 2>/dev/null || true
        wait "$SERVER" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

show() {
    printf '\n$ %s\n' "$*"
    "$@"
}

# No sleep loop: a zrpc call waits (up to --timeout) for the server to come up.
zrpc serve --bind "$ENDPOINT" examples.hello_server:Hello &
SERVER=$!

show zrpc "$ENDPOINT"                                # list the service
show zrpc "$ENDPOINT" hello zrpc                     # arguments are strings...
show zrpc -j "$ENDPOINT" add 10 20                   # ...or JSON with -j
show zrpc "$ENDPOINT" search -k last_name=Python     # keyword arguments
show zrpc -j "$ENDPOINT" count 5                     # a stream: one line per item
show zrpc -j --array "$ENDPOINT" count 5             # the same stream as one JSON array
show zrpc "$ENDPOINT" add --help                     # one method's documentation

printf '\n$ %s\n' "zrpc $ENDPOINT fail boom"
if zrpc "$ENDPOINT" fail boom; then
    echo "demo: fail did not fail" >&2
    exit 1
else
    echo "(exit status $? = remote error)"
fi

printf '\n$ kill -TERM %s   # stop the server: calls in flight may finish first\n' "$SERVER"
kill -TERM "$SERVER"
status=0
wait "$SERVER" || status=$?
SERVER=""
echo "server exited with status $status"
exit "$status"
