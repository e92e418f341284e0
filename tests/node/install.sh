#!/bin/sh
# Install zerorpc-node 0.9.8 (package-lock.json) into tests/node/node_modules.
#
#   sh tests/node/install.sh      (the test fixture runs it on first use)
#
# zerorpc 0.9.8 asks for zeromq ^4.6.0, whose addon no longer compiles on
# node >= 16; package.json overrides it with zeromq 5.3.1, same API. That
# ships prebuilt addons up to node 18 only, so on newer node npm compiles it
# (gcc, node-gyp) against the system libzmq: the headers are needed then
# (Debian: libzmq3-dev, installed here when missing and we are root).
set -eu
cd "$(dirname "$0")"

if ! pkg-config --exists libzmq 2>/dev/null && [ ! -e /usr/include/zmq.h ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "install.sh: installing libzmq3-dev (libzmq headers for zeromq's addon)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y --no-install-recommends libzmq3-dev \
            || { apt-get update && apt-get install -y --no-install-recommends libzmq3-dev; }
    else
        echo "install.sh: no libzmq headers found; building zeromq's addon will fail unless a" \
             "prebuilt one fits this node. Install libzmq's development package (Debian:" \
             "libzmq3-dev) and run again." >&2
    fi
fi

# node-gyp must not try to download node's headers: use the installed ones.
if [ -z "${npm_config_nodedir:-}" ]; then
    prefix="$(dirname "$(dirname "$(command -v node)")")"
    if [ -e "$prefix/include/node/node.h" ]; then
        npm_config_nodedir="$prefix"
        export npm_config_nodedir
    fi
fi

# Link the addon to the system libzmq instead of downloading and building libzmq.
npm_config_zmq_external=true
export npm_config_zmq_external
npm ci --no-audit --no-fund
node -e "require('zerorpc'); require('zeromq'); console.log('zerorpc-node ' + require('zerorpc/package.json').version + ', zeromq ' + require('zeromq/package.json').version + ', libzmq ' + require('zeromq').version)"
