"""Hypothesis strategies for zerorpc events, and structure-aware mutations of them.

A *case* (drawn by :func:`cases`) is a real zerorpc event as Python values
plus a short program of mutations. :func:`expand` turns one case into many
frames cheaply: it applies the program with positions and values taken from
a seeded ``random.Random``, so a run sends hundreds of thousands of frames
while hypothesis chooses the structure. Mutations work at two levels:

* msgpack level, on the values before packing: wrong arity, a header that
  is not a map, a name that is not a str, ids of the wrong type, hostile
  args (deep nesting, many empty containers, absurd credits, odd types);
* byte level, on the packed frame: truncation, flipped bytes, spliced
  container headers that declare 2^32 items, invalid UTF-8, broken
  timestamps, trailing bytes, a copy of a piece of another frame.
"""
from __future__ import annotations

import random
import struct
from typing import Any, Iterator, List, Tuple

import msgpack
from hypothesis import strategies as st

__all__ = ["cases", "expand", "NAMES", "bomb"]

# Cheap methods of tests/peers/hostile_server.py, zerorpc built-ins, control
# events, reply names and garbage. Never sleep or ticks: replies must be prompt.
NAMES = ["add", "echo", "echo", "add", "nope", "_zerorpc_ping", "_zerorpc_list", "_zerorpc_inspect",
         "_zerorpc_args", "_zerorpc_help", "_zerorpc_name", "_zrpc_kwcall", "_zpc_hb", "_zpc_more",
         "_zrpc_cancel", "OK", "ERR", "STREAM", "STREAM_DONE", "", "x\nCRITICAL zrpc.server forged",
         "\u202eevil", "a" * 300]

_scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2 ** 63), max_value=2 ** 64 - 1),
    st.sampled_from([0, 1, -1, -32, 127, 128, 255, 2 ** 31, 2 ** 32, 2 ** 63 - 1, 2 ** 64 - 1, -(2 ** 63)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20), st.binary(max_size=40),
    st.builds(msgpack.Timestamp, st.integers(0, 2 ** 33), st.integers(0, 999_999_999)),
    st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8)),
)
values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=6),
                            st.dictionaries(st.text(max_size=8), inner, max_size=5)),
    max_leaves=20,
)

# Args for each name that the service understands, so many frames reach dispatch.
_args = st.one_of(
    st.tuples(st.integers(-1000, 1000), st.integers(-1000, 1000)).map(list),
    st.tuples(values).map(list),
    st.lists(values, max_size=4),
    st.tuples(st.sampled_from(["add", "echo", "nope"]), st.lists(values, max_size=3),
              st.dictionaries(st.sampled_from(["a", "b", "value", "x"]), values, max_size=2)).map(list),
    values,
)

CREDITS = [float("inf"), float("-inf"), float("nan"), "5", 2 ** 64 - 1, -1, 1 << 40, None, [], 3, 1.5]

STRUCTURAL = ["none", "none", "none", "arity2", "arity4", "header_not_map", "name_not_str",
              "id_int", "id_float", "response_to_list", "deep_args", "many_empty", "credit",
              "wide_header"]
BYTEWISE = ["none", "none", "truncate", "flip", "insert_huge_array", "insert_huge_map", "bad_utf8",
            "bad_timestamp", "trailing", "splice", "insert_container_run", "stack_bomb"]


@st.composite
def cases(draw: Any) -> Tuple[Any, ...]:
    """A real zerorpc event (header extras, name, args, id type) and the mutations to apply to it."""
    extra = draw(st.dictionaries(st.sampled_from(["v", "zrpc_deadline", "x", "trace"]), _scalars, max_size=2))
    name = draw(st.sampled_from(NAMES))
    args = draw(_args)
    str_id = draw(st.booleans())
    reply_like = draw(st.integers(0, 9)) == 0  # sometimes an event on a (mostly unknown) channel
    structural = draw(st.lists(st.sampled_from(STRUCTURAL), min_size=1, max_size=2))
    bytewise = draw(st.lists(st.sampled_from(BYTEWISE), min_size=1, max_size=2))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    return extra, name, args, str_id, reply_like, structural, bytewise, seed


def _nest(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


def _structural(event: List[Any], kind: str, rnd: random.Random) -> List[Any]:
    header, name, args = event
    if type(header) is not dict:
        return event
    if kind == "arity2":
        return [header, name]
    if kind == "arity4":
        return [header, name, args, rnd.choice([None, 1, "x"])]
    if kind == "header_not_map":
        return [rnd.choice([[header["message_id"]], "hdr", 7, None]), name, args]
    if kind == "name_not_str":
        return [header, rnd.choice([7, b"add", None, ["add"]]), args]
    if kind == "id_int":
        header["message_id"] = rnd.randrange(2 ** 32)
    elif kind == "id_float":
        header["message_id"] = rnd.choice([1.5, float("nan")])
    elif kind == "response_to_list":
        header["response_to"] = [header["message_id"]]
    elif kind == "deep_args":
        return [header, name, [_nest(rnd.choice([20, 31, 33, 100, 1000]))]]
    elif kind == "many_empty":
        return [header, name, [[] for _ in range(rnd.choice([100, 1000, 5000]))]]
    elif kind == "credit":
        return [header, "_zpc_more", [rnd.choice(CREDITS)]]
    elif kind == "wide_header":
        header.update({f"k{i}": i for i in range(rnd.choice([10, 200]))})
    return [header, name, args]


_HUGE_ARRAY = b"\xdd\xff\xff\xff\xff"
_HUGE_MAP = b"\xdf\xff\xff\xff\xff"
_BAD_UTF8 = [b"\xa2\xff\xfe", b"\xa3\xed\xa0\x80", b"\xd9\x02\xc3\x28"]
_BAD_TS = [b"\xd6\xff\x00", b"\xc7\x05\xff\x00\x00\x00\x00\x00", b"\xd7\xff\xff\xff\xff\xff\xff\xff\xff\xff",
           b"\xc7\x0c\xff" + b"\xff" * 12]


def _bytewise(frame: bytes, kind: str, rnd: random.Random, other: bytes) -> bytes:
    n = len(frame)
    at = rnd.randrange(1, n) if n > 1 else 0
    if kind == "truncate":
        return frame[:at]
    if kind == "flip":
        b = bytearray(frame)
        for _ in range(rnd.choice([1, 1, 2, 8])):
            b[rnd.randrange(n)] = rnd.randrange(256)
        return bytes(b)
    if kind == "insert_huge_array":
        return frame[:at] + _HUGE_ARRAY + frame[at:]
    if kind == "insert_huge_map":
        return frame[:at] + _HUGE_MAP + frame[at:]
    if kind == "bad_utf8":
        return frame[:-1] + rnd.choice(_BAD_UTF8) if n > 1 else frame
    if kind == "bad_timestamp":
        return frame[:-1] + rnd.choice(_BAD_TS) if n > 1 else frame
    if kind == "trailing":
        return frame + rnd.choice([b"\x00", b"\xc1", b"\x90" * 10, other[:16]])
    if kind == "splice":
        cut = rnd.randrange(len(other)) if other else 0
        return frame[:at] + other[cut:cut + rnd.randrange(1, 64)] + frame[at:]
    if kind == "insert_container_run":
        return frame[:at] + rnd.choice([b"\x91", b"\x81\xa0", b"\x90"]) * rnd.choice([10, 40, 2000]) + frame[at:]
    if kind == "stack_bomb":
        return frame[:-1] + b"\x91" * 1100 + b"\xc0"
    return frame


def expand(case: Tuple[Any, ...], count: int, next_id: Iterator[int]) -> Iterator[bytes]:
    """``count`` frames from one case; each starts from a fresh unique message id."""
    extra, name, args, str_id, reply_like, structural, bytewise, seed = case
    rnd = random.Random(seed)
    other = b""
    for _ in range(count):
        mid = b"f%010d" % next(next_id)
        header = {"message_id": mid.decode() if str_id else mid, "v": 3, **extra}
        if reply_like:
            header["response_to"] = rnd.choice([b"unknown-channel", "unknown", mid])
        event: List[Any] = [header, name, args]
        for kind in structural:
            event = _structural(event, kind, rnd) if type(event) is list and len(event) == 3 else event
        try:
            frame = msgpack.packb(event, use_bin_type=True)
        except (TypeError, ValueError, OverflowError):
            frame = msgpack.packb([header, name, []], use_bin_type=True)
        for kind in bytewise:
            frame = _bytewise(frame, kind, rnd, other)
        other = frame
        yield frame


def bomb(size: int, header: dict) -> bytes:
    """A request of ``size`` bytes made of empty arrays: the issue's 73x decode amplification."""
    head = msgpack.packb(header, use_bin_type=True) + msgpack.packb("echo")
    n = size - len(head) - 6
    return b"\x93" + head + b"\xdd" + struct.pack(">I", n) + b"\x90" * n
