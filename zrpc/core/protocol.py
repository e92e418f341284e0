"""The zerorpc protocol v3 wire format: events, their encoding and validation.

This module owns what goes on the wire and nothing else. It never touches a
socket, a clock or a greenlet, so everything here can be tested with plain
bytes.

An event is a msgpack array ``[header, name, args]``:

* ``header`` is a map. ``message_id`` (opaque bytes or str, unique per
  connection) names the event; every event after the first of a channel
  carries ``response_to`` = the id of the channel's first event, echoed with
  the type it arrived with. ``v`` is the protocol version, 3.
* ``name`` is the method to call, or one of the reply / control names below.
* ``args`` depends on the name: a list of positional arguments for a request,
  ``[result]`` for ``OK``, ``[name, message, traceback]`` for ``ERR``, the
  item itself for ``STREAM``.

zrpc's only additions are new event names and header keys that zerorpc peers
either answer with a clear error (``_zrpc_kwcall``) or ignore harmlessly
(``_zrpc_cancel``); see the README's "Wire protocol" section.

Bad input is this module's business too: :func:`decode` bounds what one
message may cost to decode (bytes, memory, nesting), and turns every kind of
malformed payload into one exception, :class:`ProtocolError`, carrying the
header whenever it is readable so the sender can be answered. Strings that
come from the remote go into log lines only through :func:`printable`.
"""
from __future__ import annotations

import gc
import math
import os
import reprlib
from itertools import chain, compress, count
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import msgpack
from msgpack import unpackb

from .errors import ZrpcError

__all__ = [
    "VERSION",
    "OK",
    "ERR",
    "STREAM",
    "STREAM_DONE",
    "HEARTBEAT",
    "MORE",
    "CANCEL",
    "KWCALL",
    "CONTROL_EVENTS",
    "MAX_DEPTH",
    "MEMORY_FACTOR",
    "MEMORY_FLOOR",
    "MAX_CREDIT",
    "ProtocolError",
    "Event",
    "MessageId",
    "encode",
    "decode",
    "peek_header",
    "HeaderReader",
    "parse_credit",
    "printable",
    "new_header",
    "reply_header",
    "message_ids",
    "error_args",
    "unwrap_error",
]

VERSION = 3

OK = "OK"
ERR = "ERR"
STREAM = "STREAM"
STREAM_DONE = "STREAM_DONE"
HEARTBEAT = "_zpc_hb"
MORE = "_zpc_more"
#: zrpc extension: the caller gave up (timeout, closed stream); the callee
#: stops the work. zerorpc peers ignore it and rely on heartbeats instead.
CANCEL = "_zrpc_cancel"
#: zrpc extension: a call with keyword arguments, args = [method, args, kwargs].
#: A zerorpc server has no such method and answers ERR NameError, which the
#: zrpc client turns into a clear "peer cannot take keyword arguments" error.
KWCALL = "_zrpc_kwcall"

#: Events that belong to the channel machinery, never to the caller.
CONTROL_EVENTS = frozenset((HEARTBEAT, MORE, CANCEL))

#: Deepest nesting of arrays and maps in one event, counting the event array
#: itself as 1 (so the args array is 2 and a list passed as an argument is 3).
MAX_DEPTH = 32
#: The objects decoded from one message may take at most MEMORY_FACTOR times
#: its size in memory, estimated as they are built (and at least MEMORY_FLOOR
#: bytes, so small messages never hit the limit).
MEMORY_FACTOR = 15
MEMORY_FLOOR = MEMORY_FACTOR * 64 * 1024
#: Largest ``_zpc_more`` credit a peer may grant in one event.
MAX_CREDIT = 1 << 20

MessageId = Union[bytes, str]
Header = Dict[str, Any]
Event = Tuple[Header, str, Any]

_packer = msgpack.Packer(use_bin_type=True, autoreset=True)
_pack = _packer.pack


class ProtocolError(ZrpcError, ValueError):
    """A frame that is not a valid zerorpc v3 event.

    ``header`` is set when a valid header could still be read, so the
    receiver can answer the sender (or fail the right call) with an ``ERR``
    instead of dropping the message silently.
    """

    def __init__(self, message: str, header: Optional[Header] = None) -> None:
        super().__init__(message)
        self.header = header


def encode(header: Header, name: str, args: Any) -> bytes:
    """Pack one event. Raises TypeError if ``args`` holds a value msgpack cannot encode."""
    return _pack((header, name, args))


def _is_id(value: Any) -> bool:
    return type(value) is bytes or type(value) is str


_CONTAINERS = frozenset((list, dict))
# Estimated bytes, as CPython 3 stores them: a list is 56 bytes + an 8-byte
# slot per item, a dict about 64 + 40 per entry, and every item (a container
# included, counted by its own hook since its parent's hook runs last) gets 16
# for its slot and its own object (many are free: small ints, None, interned
# keys). An ext is counted as 1 KiB for the time msgpack.ExtType takes to
# build (~10x a list). Cheap on purpose: the hooks run for every container of every message
# (sys.getsizeof alone would double their cost).
_ITEM_COST = 16
_LIST_COST = 56 + _ITEM_COST
_MAP_COST = 64 + _ITEM_COST
_ENTRY_COST = 40 + _ITEM_COST  # the value; keys are mostly interned strs, shared
# Time, not memory, bounds tiny containers: each takes ~150-300 ns to build and
# hook, so none counts less than 8 bytes' worth of budget (MEMORY_FACTOR x 8):
# at most one array or map per 8 bytes of message, ~1 M in 8 MiB, ~0.3 s.
_MIN_CONTAINER_COST = MEMORY_FACTOR * 8
_EXT_COST = 1024
# Scalars get no hook, and a container's items are counted only when it is
# complete, so the few scalars that are both tiny on the wire and costly in
# memory or time are counted beforehand, from the bytes that may start them:
# an upper bound: the same bytes inside a str or bin count too (random data
# adds about 6x, CJK text about 13x), except in the big str and bin values
# near the top of the message, which the walk below leaves out. Cost by byte, in bytes:
# negative fixints -32..-6 and int8 (an int object each, where a 1-byte
# positive int is free) and timestamps (a Python object built by Python
# code: the slowest thing msgpack makes). Short strs are left out on purpose:
# as map keys they are interned, and counting them would refuse ordinary
# lists of small records.
_SCALAR_CLASSES = ((40, bytes(range(0xE0, 0xFB)) + b"\xd0"), (192, b"\xd6\xd7\xc7"))
_SCALAR_TABLE = bytearray(256)
for _cls, (_cost, _starts) in enumerate(_SCALAR_CLASSES, 1):
    for _byte in _starts:
        _SCALAR_TABLE[_byte] = _cls
_SCALAR_TABLE = bytes(_SCALAR_TABLE)
_SCALAR_MARKS = tuple((bytes((cls,)), cost) for cls, (cost, _) in enumerate(_SCALAR_CLASSES, 1))
# Up to this size, no budget: a message can hold at most 64 Ki objects (~6 MB,
# ~6 ms to build), under MEMORY_FLOOR; hooks would cost a small call 10x.
_BUDGET_FROM = 64 * 1024


def _scalar_cost(scanned: bytes) -> int:
    classes = scanned.translate(_SCALAR_TABLE)
    return sum(classes.count(mark) * cost for mark, cost in _SCALAR_MARKS)


# The pre-scans need not read the bodies of big str and bin values: their
# bytes are data, never the start of an object. So the top of the message
# (a few levels of small arrays and maps: [header, name, [args]]) is walked
# with msgpack's own parser, which builds nothing when it skips, and the
# bodies it finds are left out of the scans. Anything unexpected: scan it all.
_BLOB_HEADS = {0xC4: 2, 0xC5: 3, 0xC6: 5, 0xD9: 2, 0xDA: 3, 0xDB: 5}  # bin8/16/32, str8/16/32
_BLOB_MIN = 1024
_WALK_DEPTH = 3
_WALK_ITEMS = 16


def _container_items(data: Any, pos: int) -> Optional[Tuple[bool, int]]:
    """(is_map, count) if the object at ``pos`` is an array or a map, else None."""
    b = data[pos]
    if 0x90 <= b <= 0x9F:
        return False, b & 0x0F
    if 0x80 <= b <= 0x8F:
        return True, b & 0x0F
    if b in (0xDC, 0xDE):
        return b == 0xDE, int.from_bytes(data[pos + 1:pos + 3], "big")
    if b in (0xDD, 0xDF):
        return b == 0xDF, int.from_bytes(data[pos + 1:pos + 5], "big")
    return None


def _scanned_part(payload: Any) -> bytes:
    """The payload's bytes without the bodies of the big str and bin values near its top."""
    data = memoryview(payload).cast("B")
    unpacker = msgpack.Unpacker(max_buffer_size=len(data) + 1)
    unpacker.feed(data)
    spans: List[Tuple[int, int]] = []
    pending = [(1, 0)]  # (objects left to read at a level, its depth): the message is one object
    try:
        while pending:
            left, depth = pending.pop()
            if left == 0:
                continue
            pending.append((left - 1, depth))
            start = unpacker.tell()
            container = _container_items(data, start)
            if container is not None and depth < _WALK_DEPTH and container[1] <= _WALK_ITEMS:
                items = unpacker.read_map_header() * 2 if container[0] else unpacker.read_array_header()
                pending.append((items, depth + 1))
                continue
            unpacker.skip()
            head = _BLOB_HEADS.get(data[start])
            if head is not None and unpacker.tell() - start >= _BLOB_MIN:
                spans.append((start + head, unpacker.tell()))
    except Exception:  # malformed or too deep: decoding will say what is wrong
        return bytes(data)
    if not spans:
        return bytes(data)
    parts, last = [], 0
    for begin, end in spans:
        parts.append(data[last:begin])
        last = end
    parts.append(data[last:])
    return b"".join(parts)


# peek_header reads at most this many bytes: a header is a few dozen.
_PEEK_BYTES = 64 * 1024


class _OverBudget(Exception):
    pass


class _Budget:
    """msgpack hooks that add up the memory a message costs as it is decoded, and stop it early.

    The hooks run once per array, map and ext, so an attack made of millions
    of tiny containers is cut off after about ``limit`` bytes of them,
    instead of being built in full and rejected afterwards.
    """

    __slots__ = ("limit", "on_list", "on_map", "on_ext")

    def __init__(self, size: int, cost: int = 0) -> None:
        limit = self.limit = max(MEMORY_FACTOR * size, MEMORY_FLOOR)
        if cost > limit:
            raise _OverBudget

        # Closures over one counter: the cheapest hooks CPython can call (~70 ns).
        def on_list(value: list) -> list:
            nonlocal cost
            spent = _LIST_COST + _ITEM_COST * len(value)
            cost += spent if spent > _MIN_CONTAINER_COST else _MIN_CONTAINER_COST
            if cost > limit:
                raise _OverBudget
            return value

        def on_map(value: dict) -> dict:
            nonlocal cost
            spent = _MAP_COST + _ENTRY_COST * len(value)
            cost += spent if spent > _MIN_CONTAINER_COST else _MIN_CONTAINER_COST
            if cost > limit:
                raise _OverBudget
            return value

        def on_ext(code: int, data: bytes) -> msgpack.ExtType:
            nonlocal cost
            cost += _EXT_COST + len(data)
            if cost > limit:
                raise _OverBudget
            return msgpack.ExtType(code, data)

        self.on_list, self.on_map, self.on_ext = on_list, on_map, on_ext

    def unpack(self, payload: Any) -> Any:
        # No collection while decoding: a message of many containers would
        # otherwise trigger one per 700 of them (half the time of the 73x
        # attack). Nothing else runs meanwhile: msgpack only calls our hooks.
        collecting = gc.isenabled()
        gc.disable()
        try:
            return msgpack.unpackb(payload, raw=False, strict_map_key=True,
                                   list_hook=self.on_list, object_hook=self.on_map, ext_hook=self.on_ext)
        finally:
            if collecting:
                gc.enable()


_LISTS, _MAPS = frozenset((list,)), frozenset((dict,))
# Bytes that may start an array or a map (fixarray, fixmap, array16/32, map16/32).
_CONTAINER_TABLE = bytes(1 if 0x80 <= b <= 0x9F or 0xDC <= b <= 0xDF else 0 for b in range(256))


def _too_deep(root: Any, scanned: bytes) -> bool:
    """True if ``root`` nests arrays and maps deeper than MAX_DEPTH.

    Breadth first, one level at a time, with every per-item step in C
    (map, compress, chain): ~20 ns an item, no recursion. Skipped outright
    when the payload has too few bytes that could start a container.
    """
    if scanned.translate(_CONTAINER_TABLE).count(1) <= MAX_DEPTH:
        return False
    is_list, is_map, is_container = _LISTS.__contains__, _MAPS.__contains__, _CONTAINERS.__contains__
    level = [root]
    for _ in range(MAX_DEPTH):
        kinds = list(map(type, level))
        children = list(chain(chain.from_iterable(compress(level, map(is_list, kinds))),
                              chain.from_iterable(map(dict.values, compress(level, map(is_map, kinds))))))
        level = list(compress(children, map(is_container, map(type, children))))
        if not level:
            return False
    return True


def decode(payload: Any, max_size: Optional[int] = None) -> Event:
    """Unpack and validate one event; raise ProtocolError with a clear message if it is bad.

    ``payload`` is bytes or any buffer. ``max_size`` bounds its length; the
    memory its decoding may take is bounded by MEMORY_FACTOR times that
    length (at least MEMORY_FLOOR), its nesting by MAX_DEPTH. Whenever the
    header can still be read, the ProtocolError carries it in ``.header``.
    """
    size = len(payload)
    if max_size is not None and size > max_size:
        raise ProtocolError(
            f"message of {size} bytes exceeds the limit of {max_size} bytes",
            peek_header(payload),
        )
    scanned = None
    try:
        if size <= _BUDGET_FROM:  # too small to cost much: no hooks, the fast path
            event = unpackb(payload, raw=False, strict_map_key=True)
        else:
            scanned = _scanned_part(payload)
            event = _Budget(size, _scalar_cost(scanned)).unpack(payload)
    except _OverBudget:
        limit = max(MEMORY_FACTOR * size, MEMORY_FLOOR)
        raise ProtocolError(
            f"message of {size} bytes would take more than {limit} bytes of memory to decode "
            f"({MEMORY_FACTOR}x its size): too many arrays, maps or small items; send fewer, larger values "
            f"(a str, bin or big int costs about its size)",
            peek_header(payload),
        ) from None
    except msgpack.StackError:  # msgpack's own fixed limit (1024), beyond ours
        raise ProtocolError(f"message nested deeper than {MAX_DEPTH} levels", peek_header(payload)) from None
    except Exception as exc:  # msgpack raises several unrelated types
        detail = f"{exc.__class__.__name__}: {exc}" if str(exc) else exc.__class__.__name__
        raise ProtocolError(f"payload is not valid msgpack ({printable(detail, 200)})", peek_header(payload)) from None
    if type(event) is not list or len(event) != 3:
        readable = event[0] if type(event) is list and event else None
        raise ProtocolError(
            f"payload must be a msgpack array [header, name, args], got {_describe(event)}",
            _valid_header(readable),
        )
    header, name, args = event
    if type(header) is not dict:
        raise ProtocolError(f"header must be a map, got {_describe(header)}")
    if not _is_id(header.get("message_id")):
        raise ProtocolError(
            f"header.message_id must be bytes or str, got {_describe(header.get('message_id'))}"
        )
    response_to = header.get("response_to")
    if response_to is not None and not _is_id(response_to):
        raise ProtocolError(f"header.response_to must be bytes or str, got {_describe(response_to)}")
    if type(name) is not str:
        raise ProtocolError(f"event name must be a str, got {_describe(name)}", header)
    if _too_deep(event, bytes(payload) if scanned is None else scanned):
        raise ProtocolError(f"message nested deeper than {MAX_DEPTH} levels of arrays and maps", header)
    return header, name, args


def peek_header(payload: Any) -> Optional[Header]:
    """Best effort: read only the header of a (possibly huge or broken) payload.

    Reads at most the first 64 KiB, under the same limits as :func:`decode`.
    Returns the header only if its ids are well formed, so that a bad event
    can be answered with an ERR routed to its caller.
    """
    try:
        prefix = memoryview(payload)[:_PEEK_BYTES]
        budget = _Budget(len(prefix))
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=True, max_buffer_size=max(len(prefix), 1),
                                    list_hook=budget.on_list, object_hook=budget.on_map,
                                    ext_hook=budget.on_ext)
        unpacker.feed(prefix)
        if unpacker.read_array_header() < 1:
            return None
        header = unpacker.unpack()
        if type(header) is not dict or _too_deep(header, bytes(prefix)):
            return None
    except Exception:
        return None
    return _valid_header(header)


class HeaderReader:
    """Reads the routing part of events (message id, channel id, name) without decoding their args.

    For a process that only forwards events (the router of ``zrpc serve
    --workers``): :meth:`read` costs about as much as decoding a small event
    whole, and never builds the args, however large. Not thread safe: one
    reader per loop.
    """

    __slots__ = ("_unpacker", "_offset")

    #: Events up to this size go through one reused Unpacker; larger ones get a fresh one
    #: fed only their first _PEEK_BYTES (a reused one would copy the whole payload in).
    REUSE_UP_TO = _PEEK_BYTES

    def __init__(self) -> None:
        self._unpacker = self._new(self.REUSE_UP_TO)
        self._offset = 0

    @staticmethod
    def _new(size: int) -> msgpack.Unpacker:
        # A header is a few dozen bytes: a few keys, short ids. The length limits cut
        # a hostile header's cost before it is built (the buffer bounds the rest).
        return msgpack.Unpacker(raw=False, strict_map_key=True, max_buffer_size=max(size, 1),
                                max_map_len=256, max_array_len=256, max_ext_len=0)

    def read(self, payload: Any) -> Optional[Tuple[MessageId, Optional[MessageId], Any]]:
        """``(message_id, response_to, name)`` of one event, or None if its header is unreadable.

        ``response_to`` is None on the first event of a channel. ``name`` is
        returned as read (normally a str); the args are skipped, never built.
        """
        size = len(payload)
        try:
            if size > self.REUSE_UP_TO:
                unpacker = self._new(_PEEK_BYTES)
                unpacker.feed(memoryview(payload)[:_PEEK_BYTES])
                if unpacker.read_array_header() != 3:
                    return None
                header = unpacker.unpack()
                name = unpacker.unpack()
            else:
                unpacker = self._unpacker
                unpacker.feed(payload)
                self._offset += size
                if unpacker.read_array_header() != 3:
                    raise ValueError
                header = unpacker.unpack()
                name = unpacker.unpack()
                unpacker.skip()
                if unpacker.tell() != self._offset:  # trailing bytes: not one event
                    raise ValueError
        except Exception:  # msgpack raises several unrelated types; any of them means unreadable
            if size <= self.REUSE_UP_TO:
                self._unpacker, self._offset = self._new(self.REUSE_UP_TO), 0  # its buffer is unknown now
            return None
        if type(header) is not dict:
            return None
        message_id = header.get("message_id")
        response_to = header.get("response_to")
        if not _is_id(message_id) or (response_to is not None and not _is_id(response_to)):
            return None
        return message_id, response_to, name


def parse_credit(args: Any) -> int:
    """The credit granted by the args of a ``_zpc_more`` event: an int from 0 to MAX_CREDIT.

    Raises ProtocolError saying what is wrong otherwise (inf, NaN, a string,
    a huge or negative number, a missing value).
    """
    if type(args) not in (list, tuple) or not args:
        raise ProtocolError(f"{MORE} args must be [credit], got {_describe(args)}")
    value = args[0]
    if type(value) is float and math.isfinite(value) and value.is_integer():
        value = int(value)  # JavaScript peers may send integral doubles
    if type(value) is not int:
        raise ProtocolError(f"{MORE} credit must be an integer, got {_describe(args[0])}")
    if not 0 <= value <= MAX_CREDIT:
        raise ProtocolError(f"{MORE} credit must be from 0 to {MAX_CREDIT}, got {printable(value)}")
    return value


_repr = reprlib.Repr()
_repr.maxlevel = 3
_repr.maxstring = _repr.maxother = 200
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 8


def printable(value: Any, limit: int = 80) -> str:
    """``value`` made safe for a log line: escaped like repr, at most ``limit`` characters.

    A str comes back escaped but unquoted (``printable("a\\nb") == "a\\\\nb"``);
    anything else as a bounded repr that never recurses deeper than 3 levels.
    No control character, line break or bidi override survives, so a remote
    string can never forge or hide a log record.
    """
    if type(value) is str:
        text = repr(value[: limit + 1])[1:-1]
    else:
        try:
            text = _repr.repr(value)
        except Exception as exc:  # a hostile __repr__ cannot reach here from msgpack, but be safe
            text = f"<unprintable {type(value).__name__}: {type(exc).__name__}>"
        text = text.encode("ascii", "backslashreplace").decode("ascii")
    if len(text) > limit:
        text = text[: max(limit - 3, 0)] + "..."
    return text


def _valid_header(header: Any) -> Optional[Header]:
    if type(header) is not dict or not _is_id(header.get("message_id")):
        return None
    if header.get("response_to") is not None and not _is_id(header["response_to"]):
        return None
    return header


def _describe(value: Any) -> str:
    if type(value) is list:
        return f"an array of {len(value)} items: {printable(value, 60)}"
    return f"{type(value).__name__} {printable(value, 60)}"


def message_ids() -> Iterator[bytes]:
    """Yield message ids unique to this generator: 32 ASCII hex bytes, like zerorpc-python.

    A random 96-bit base makes ids from different clients collide with
    negligible probability; ASCII keeps them safe for zerorpc-node, which
    uses them as object keys.
    """
    base = os.urandom(12).hex().encode()
    for n in count(int.from_bytes(os.urandom(3), "big")):
        yield b"%08x%s" % (n & 0xFFFFFFFF, base)


def new_header(message_id: MessageId) -> Header:
    """Header of the first event of a channel."""
    return {"message_id": message_id, "v": VERSION}


def reply_header(message_id: MessageId, channel_id: MessageId) -> Header:
    """Header of any later event on channel ``channel_id``."""
    return {"message_id": message_id, "v": VERSION, "response_to": channel_id}


def error_args(name: str, message: str, traceback: str) -> List[str]:
    """Args of an ERR event; zerorpc-node insists on exactly three strings."""
    return [str(name), str(message), str(traceback)]


def unwrap_error(args: Any) -> Tuple[str, str, str]:
    """Read the args of an ERR event, tolerating protocol v1/v2 and sloppy peers."""
    if isinstance(args, (list, tuple)):
        if len(args) >= 3:
            return _text(args[0]), _text(args[1]), _text(args[2])
        if len(args) == 1:  # protocol v1: [repr(exception)]
            return "RemoteError", _text(args[0]), ""
    return "RemoteError", _text(args), ""


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)
