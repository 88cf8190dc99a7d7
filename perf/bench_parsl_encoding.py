"""Parsl monitoring messages: chronompi's encoding (version 3, msgpack records) against plain msgpack maps.

One process, no MPI. The stream is ``bench_parsl.make_stream`` (TASK_INFO, WORKER_TASK_INFO,
RESOURCE_INFO, NODE_INFO, BLOCK_INFO, WORKFLOW_INFO with Parsl's field names; 5,000 tasks = 30,112
messages), built once before any timing, in two forms:

- ``plain``: as ``bench_parsl.py`` sends it;
- ``packages``: the same, each NODE_INFO carrying what a real HTEX manager's registration adds
  (``packages``: every installed distribution and its version, as ``process_worker_pool.py`` builds it,
  and ``type``, ``parsl_v``, ``prefetch_capacity``, ``os``, ``dir``), as on a real workflow.

Variants, each a pair of functions message -> (story name, payload) and payload -> (name, body):

- ``chronompi``: ``chronompi.parsl.sink.encode_tagged``, the call the hub's ``ChronicleSink.record``
  makes (version 3, ``chronompi.parsl.packed``: msgpack arrays in ``packed.SCHEMAS`` order), and
  ``chronompi.parsl.decode_message``. Until commit 8b77f78 this was version 2, a hand-written encoder, and
  a third variant, ``msgpack_schema``, was what version 3 became: ``results/parsl-encoding.jsonl``'s lines
  up to that commit compare the two (version 3 won on CPU and replaced version 2);
- ``msgpack_map``: the body as msgpack maps (``use_bin_type=True``), the message type as its code, naive
  datetimes as ext type 1 (int64 microseconds since 1970, 10 bytes), aware ones as ext type 2, enums as
  their value; payload ``0x03`` + ``[code, body]``; a body of 1 KiB or more zlib'd when that saves a
  quarter (payload ``0x04``, the body's length, 4 bytes, the zlib stream). Only NODE_INFO with
  ``packages`` reaches 1 KiB (at 512 bytes, where version 3 tries, every map TASK_INFO would be tried).

Every variant is called as the hub calls ``encode_tagged`` (``msgpack_map``: its code with the variant's
encoder in place of ``encode_message``).

Before timing, every message of both streams is encoded and decoded by every variant and compared with
the original, types included (a float stays a float, a naive datetime naive). Then ``--rounds`` rounds,
the variants' order rotated each round; in a round each variant encodes the whole of each stream, decodes
it, and encodes and decodes each message type of ``plain`` on its own, repeated to at least 1,000 messages
(for the per-type times). Times are
per message: wall (``perf_counter``) and this thread's CPU (``thread_time``); median and min over the
rounds. The garbage collector runs as in the hub, with the stream frozen out of it (``gc.freeze``).
``os.getloadavg()`` before the first round and after the last. One JSON line per run appended to OUT.

    pip install -e '.[perf]'   # once: msgpack (the perf extra)
    python perf/bench_parsl_encoding.py [--tasks 5000] [--rounds 7] [--out perf/out/parsl-encoding.jsonl]
"""

from __future__ import annotations

import argparse
import datetime as dt
import enum
import gc
import json
import math
import os
import statistics
import struct
import time
import types
import zlib
from collections.abc import Callable
from importlib.metadata import distributions, version
from pathlib import Path
from typing import Any

import msgpack
from bench_parsl import make_stream
from benchlib import launcher_machine

from chronompi.parsl import decode_message, sink
from chronompi.parsl.packed import KIND_CODE, KINDS
from chronompi.parsl.sink import encode_tagged

ROOT = Path(__file__).resolve().parents[1]
PER_TYPE_MIN = 1000
Message = tuple[Any, Any]
Encode = Callable[[Any], tuple[str, bytes]]
Decode = Callable[[bytes], tuple[str, Any]]

# -- the msgpack codecs -----------------------------------------------------------------------------

V_MSGPACK, V_MSGPACK_Z = 0x03, 0x04  # the leading byte a version 3 would need (payload_version reads it)
_HEAD, _HEAD_Z = bytes([V_MSGPACK]), bytes([V_MSGPACK_Z])
ZMIN = 1024
EXT_NAIVE, EXT_AWARE = 1, 2
_EPOCH = dt.datetime(1970, 1, 1)
_EPOCH_UTC = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_US = dt.timedelta(microseconds=1)
_Q, _QQ, _LEN = struct.Struct(">q"), struct.Struct(">qq"), struct.Struct(">I")


_new_ext = tuple.__new__  # msgpack.ExtType is a namedtuple whose __new__ checks its fields in Python


def _default(x: Any) -> Any:
    """What msgpack cannot pack itself (called from C once per such value): naive datetimes as ext type 1
    (the common case first, in the quickest Python found: about half the time of ``ExtType(1, ...)`` with
    ``(x - epoch) // 1 us``), aware ones as ext type 2, enums as their value."""
    if type(x) is dt.datetime and x.tzinfo is None:
        d = x - _EPOCH
        return _new_ext(
            msgpack.ExtType, (EXT_NAIVE, _Q.pack((d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds))
        )
    if isinstance(x, dt.datetime):
        off = x.utcoffset()
        if off is None:
            return _default(x.replace(tzinfo=None))
        return msgpack.ExtType(EXT_AWARE, _QQ.pack((x - _EPOCH_UTC) // _US, off // _US))
    if isinstance(x, enum.Enum):
        return x.value
    raise TypeError(f"msgpack variant: cannot encode {type(x).__qualname__}")


def _ext(code: int, data: bytes) -> Any:
    if code == EXT_NAIVE:
        return _EPOCH + dt.timedelta(0, 0, _Q.unpack(data)[0])
    if code == EXT_AWARE:
        at, off = _QQ.unpack(data)
        return (_EPOCH_UTC + dt.timedelta(microseconds=at)).astimezone(dt.timezone(dt.timedelta(microseconds=off)))
    return msgpack.ExtType(code, data)


_packer = msgpack.Packer(default=_default, use_bin_type=True)


def _unpack(data: bytes | memoryview) -> Any:
    return msgpack.unpackb(data, ext_hook=_ext, raw=False, strict_map_key=False)


def _frame(body: bytes) -> bytes:
    if len(body) >= ZMIN:
        z = zlib.compress(body, 6)
        if len(z) * 4 <= len(body) * 3:
            return _HEAD_Z + _LEN.pack(len(body)) + z
    return _HEAD + body


def _unframe(payload: bytes) -> Any:
    if payload[0] == V_MSGPACK:
        return _unpack(memoryview(payload)[1:])
    if payload[0] != V_MSGPACK_Z:
        raise ValueError(f"not a msgpack payload: {payload[:8]!r}")
    (n,) = _LEN.unpack_from(payload, 1)
    body = zlib.decompress(memoryview(payload)[1 + _LEN.size :])
    if len(body) != n:
        raise ValueError(f"compressed body of {len(body)} bytes, not {n}")
    return _unpack(body)


def encode_map(kind: str, body: Any, version: int = 3) -> bytes:
    code = KIND_CODE.get(kind, 0)
    return _frame(_packer.pack((code or kind, body)))


def decode_map(payload: bytes) -> tuple[str, Any]:
    code, body = _unframe(payload)
    return (KINDS[code] if type(code) is int else code), body


def tagged(encode: Callable[..., bytes]) -> Encode:
    """The hub's ``encode_tagged`` (tag check, story name) around another encoder: its own code, run with
    ``encode_message`` in its globals swapped for ``encode`` (so the steps around the encoder are the same)."""
    scope = {**vars(sink), "encode_message": encode}
    return types.FunctionType(encode_tagged.__code__, scope, "encode_tagged", encode_tagged.__defaults__)


VARIANTS: dict[str, tuple[Encode, Decode]] = {
    "chronompi": (encode_tagged, decode_message),
    "msgpack_map": (tagged(encode_map), decode_map),
}

# -- the streams and the check ----------------------------------------------------------------------


def with_packages(msgs: list[Message]) -> list[Message]:
    """The stream with NODE_INFO as a real HTEX manager's registration fills it (``packages`` and all)."""
    packages = {d.metadata["Name"]: d.version for d in distributions()}
    extra = {"type": "registration", "parsl_v": version("parsl"), "prefetch_capacity": 0, "os": "Linux"}
    extra["dir"] = "/home/user/workflow"
    return [(k, {**b, **extra, "packages": packages}) if k.name == "NODE_INFO" else (k, b) for k, b in msgs]


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (nan equals nan, -0.0 is not 0.0, an aware datetime
    keeps its offset)."""
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return a.keys() == b.keys() and all(same(v, b[k]) for k, v in a.items())
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(map(same, a, b))
    if type(a) is float:
        return math.isnan(b) if math.isnan(a) else a == b and math.copysign(1, a) == math.copysign(1, b)
    if type(a) is dt.datetime and a.utcoffset() is not None:  # (== is False across zones at a fold: PEP 495)
        off = a.utcoffset()
        return off == b.utcoffset() and a.replace(tzinfo=None) == b.replace(tzinfo=None)
    return bool(a == b)


def check(name: str, encode: Encode, decode: Decode, msgs: list[Message]) -> list[bytes]:
    payloads = []
    for i, m in enumerate(msgs):
        kind, payload = encode(m)
        back = decode(payload)
        if kind != m[0].name or back[0] != kind or not same(back[1], m[1]):
            raise SystemExit(f"{name}: message {i} ({kind}) does not round-trip:\n{m[1]!r}\n{back[1]!r}")
        payloads.append(payload)
    return payloads


# -- timing -----------------------------------------------------------------------------------------


def timed(fn: Callable[[Any], Any], items: list[Any]) -> tuple[float, float]:
    """(wall, CPU) microseconds per item of ``list(map(fn, items))``."""
    c0, t0 = time.thread_time(), time.perf_counter()
    out = list(map(fn, items))
    t1, c1 = time.perf_counter(), time.thread_time()
    del out
    n = len(items)
    return (t1 - t0) / n * 1e6, (c1 - c0) / n * 1e6


def summary(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "rounds": [round(v, 4) for v in values]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=5000)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--out", default=str(ROOT / "perf" / "out" / "parsl-encoding.jsonl"))
    a = p.parse_args()
    plain = make_stream(a.tasks)
    streams = {"plain": plain, "packages": with_packages(plain)}
    counts = {t: sum(m[0].name == t for m in plain) for t in KINDS[1:] if any(m[0].name == t for m in plain)}
    # per type, the type's messages of plain repeated to at least PER_TYPE_MIN (WORKFLOW_INFO has 2)
    by_type = {t: [m for m in plain if m[0].name == t] * -(-PER_TYPE_MIN // n) for t, n in counts.items()}
    payloads = {(v, s): check(v, *VARIANTS[v], msgs) for v in VARIANTS for s, msgs in streams.items()}
    typed = {(v, t): [VARIANTS[v][0](m)[1] for m in ms] for v in VARIANTS for t, ms in by_type.items()}
    gc.collect()
    gc.freeze()  # the stream and the payloads are no work for the collector (in the hub they are not there)

    # (variant, what) -> wall and CPU us per message, one a round
    wall: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    names = list(VARIANTS)
    load_start = os.getloadavg()
    t_start = time.perf_counter()
    for rnd in range(a.rounds):
        for v in names[rnd % len(names) :] + names[: rnd % len(names)]:
            encode, decode = VARIANTS[v]
            jobs: list[tuple[str, Callable[[Any], Any], list[Any]]] = [
                (f"encode {s}", encode, msgs) for s, msgs in streams.items()
            ]
            jobs += [(f"decode {s}", decode, payloads[(v, s)]) for s in streams]
            jobs += [(f"encode {t}", encode, ms) for t, ms in by_type.items()]
            jobs += [(f"decode {t}", decode, typed[(v, t)]) for t in by_type]
            for what, fn, items in jobs:
                w, c = timed(fn, items)
                wall.setdefault((v, what), []).append(w)
                cpu.setdefault((v, what), []).append(c)
    seconds = time.perf_counter() - t_start
    load_end = os.getloadavg()

    variants: dict[str, Any] = {}
    for v in names:
        row: dict[str, Any] = {}
        for s, msgs in streams.items():
            pl = payloads[(v, s)]
            row[s] = {
                "bytes_per_msg": sum(map(len, pl)) / len(pl),
                "bytes_per_type": {
                    t: sum(len(b) for b, m in zip(pl, msgs, strict=True) if m[0].name == t) / n
                    for t, n in counts.items()
                },
            }
            for op in ("encode", "decode"):
                row[s][f"{op}_us"] = summary(wall[(v, f"{op} {s}")])
                row[s][f"{op}_cpu_us"] = summary(cpu[(v, f"{op} {s}")])
        for op in ("encode", "decode"):
            row["plain"][f"{op}_us_per_type"] = {t: summary(wall[(v, f"{op} {t}")]) for t in by_type}
            row["plain"][f"{op}_cpu_us_per_type"] = {t: summary(cpu[(v, f"{op} {t}")]) for t in by_type}
        variants[v] = row
    result = {
        "bench": "parsl-encoding",
        "tasks": a.tasks,
        "messages": len(plain),
        "types": counts,
        "per_type_messages": {t: len(ms) for t, ms in by_type.items()},
        "packages_per_node_info": len(next(b for k, b in streams["packages"] if k.name == "NODE_INFO")["packages"]),
        "rounds": a.rounds,
        "seconds": round(seconds, 2),
        "loadavg_start": [round(x, 2) for x in load_start],
        "loadavg_end": [round(x, 2) for x in load_end],
        "msgpack": version("msgpack"),
        "msgpack_c": msgpack.Packer.__module__ != "msgpack.fallback",
        "parsl": version("parsl"),
        "variants": variants,
        "machine": launcher_machine(),
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        f.write(json.dumps(result) + "\n")
    report(result)


def report(r: dict[str, Any]) -> None:
    print(
        f"{r['messages']} messages ({r['tasks']} tasks), {r['rounds']} rounds in {r['seconds']} s, load average "
        f"{r['loadavg_start'][0]} -> {r['loadavg_end'][0]}, msgpack {r['msgpack']} (C: {r['msgpack_c']})"
    )
    for s in ("plain", "packages"):
        print(f"\nstream {s}: us per message, median [min] of the rounds, wall (thread CPU)")
        print("| variant | B/msg | encode us | encode CPU us | decode us | decode CPU us |")
        print("| --- | --- | --- | --- | --- | --- |")
        for v, row in r["variants"].items():
            x = row[s]
            cells = [
                f"{x[k]['median']:.2f} [{x[k]['min']:.2f}]"
                for k in ("encode_us", "encode_cpu_us", "decode_us", "decode_cpu_us")
            ]
            print(f"| {v} | {x['bytes_per_msg']:.1f} | " + " | ".join(cells) + " |")
        print(f"\nstream {s}: B/msg per type")
        kinds = list(r["types"])
        print("| variant | " + " | ".join(kinds) + " |")
        print("| --- " * (len(kinds) + 1) + "|")
        for v, row in r["variants"].items():
            print(f"| {v} | " + " | ".join(f"{row[s]['bytes_per_type'][t]:.1f}" for t in kinds) + " |")
    for clock, key in (("wall", "us"), ("thread CPU", "cpu_us")):
        print(f"\nstream plain: encode / decode us per message by type (median of the rounds, {clock})")
        print("| variant | " + " | ".join(r["types"]) + " |")
        print("| --- " * (len(r["types"]) + 1) + "|")
        for v, row in r["variants"].items():
            enc, dec = row["plain"][f"encode_{key}_per_type"], row["plain"][f"decode_{key}_per_type"]
            cells = [f"{enc[t]['median']:.2f} / {dec[t]['median']:.2f}" for t in r["types"]]
            print(f"| {v} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
