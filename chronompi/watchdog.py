"""No silent hang: a client blocked in an MPI call that can never return ends the job with a message.

Inside a session the service ranks (visor, keepers, graphers, spares) serve chronompi and never
enter the science code's communication. A client that calls a collective on a communicator that
includes them (typically ``comm = MPI.COMM_WORLD`` at the top of a program, then ``comm.Barrier()``
inside the session) waits forever. So does a client whose blocking receive can only be matched by
a service rank, once every client is blocked.

Client side (:class:`Watchdog`, polled by the client's ticker thread every ``client.batch_ms``):
the frame of the thread that entered the session is sampled with ``sys._current_frames()``; only
when it stayed at the same instruction for ``service.hang_check_s`` is the instruction looked at:
:func:`call_at` reads the bytecode (``dis``) for a method call of a blocking mpi4py operation and
the receiver as a chain of names (``comm``, ``MPI.COMM_WORLD``, ``self.comm``); :func:`resolve`
evaluates the chain from the frame's namespaces without calling anything; the communicator's group
is compared with the session's service ranks (``Group.Translate_ranks``, a local call). The report
goes to the visor; the frame moving on later withdraws it.

Visor side (:class:`HangJudge`, pure bookkeeping): a collective on a communicator with service
ranks is a certain deadlock: the first such report ends the run. A blocking point-to-point call on
such a communicator ends it only once every live client is blocked. A call whose receiver cannot be
evaluated is a warning, never an abort (a false positive is worse than a hang).

The bytecode reading is written for CPython 3.11 and tolerates the other layouts it knows
(3.10's CALL_METHOD, 3.12's LOAD_ATTR method flag); anything it does not recognise means "no
detection", never an error. No MPI is imported here at module level (pure parts are unit-tested).
"""

from __future__ import annotations

import builtins
import dis
import functools
import inspect
import linecache
import os
import sys
import time
import types
from collections.abc import Sequence
from typing import Any

from ._plain import plain

COLLECTIVE = frozenset(
    "Barrier barrier Bcast bcast Gather gather Gatherv Scatter scatter Scatterv Allgather allgather Allgatherv "
    "Alltoall alltoall Alltoallv Alltoallw Reduce reduce Allreduce allreduce Reduce_scatter Reduce_scatter_block "
    "Scan scan Exscan exscan Split Split_type Dup Create Create_cart Create_graph Create_dist_graph "
    "Create_dist_graph_adjacent Create_intercomm Merge Accept Connect Spawn Spawn_multiple "
    "Neighbor_allgather neighbor_allgather Neighbor_alltoall neighbor_alltoall".split()
)
P2P = frozenset("Recv recv Probe probe Mprobe mprobe Sendrecv sendrecv Sendrecv_replace Ssend ssend Send send".split())
_CALLS = {"CALL", "CALL_METHOD", "CALL_FUNCTION", "CALL_FUNCTION_KW", "CALL_KW"}
_KW_ON_STACK = {"CALL_FUNCTION_KW", "CALL_KW"}  # the keyword names tuple is one more stack item
_BEFORE_CALL = {"PRECALL", "KW_NAMES", "CACHE", "EXTENDED_ARG", "NOP"}
_ROOTS = {"LOAD_FAST", "LOAD_FAST_CHECK", "LOAD_GLOBAL", "LOAD_NAME", "LOAD_DEREF", "LOAD_CLASSDEREF"}

# report kinds (the visor's HangJudge decides on them)
SERVICE_COLLECTIVE = "service-collective"  # certain deadlock
SERVICE_P2P = "service-p2p"  # a deadlock once every client is blocked
CLIENTS_ONLY = "clients-only"  # blocked on a communicator of clients only (may be legit)
UNRESOLVED = "unresolved"  # the receiver could not be evaluated: warn, never abort


@plain(frozen=True)
class Call:
    """A method call of a blocking mpi4py operation, read from the bytecode."""

    method: str
    receiver: tuple[str, ...] | None  # ("MPI", "COMM_WORLD"); None: not a chain of names
    op: str  # "collective" | "p2p"
    lineno: int | None
    text: str  # the call as written, or rebuilt from the names


@functools.lru_cache(maxsize=256)
def call_at(code: types.CodeType, lasti: int) -> Call | None:
    """The blocking MPI method call at byte offset ``lasti`` of ``code``, or None (not one, or not readable)."""
    try:
        return _call_at(code, lasti)
    except Exception:  # an unknown bytecode layout: no detection, never an error
        return None


def _call_at(code: types.CodeType, lasti: int) -> Call | None:
    ins = list(dis.get_instructions(code))
    at = next((i for i, x in enumerate(ins) if x.offset == lasti), None)
    if at is None or ins[at].opname not in _CALLS or ins[at].arg is None:
        return None
    i = _method_by_position(ins, at)
    if i is None:
        i = _method_by_stack(ins, at)
    if i is None:
        return None
    meth = ins[i]
    method = str(meth.argval)
    op = "collective" if method in COLLECTIVE else "p2p" if method in P2P else None
    if op is None:
        return None
    receiver = _chain(ins, i - 1)
    pos = getattr(ins[at], "positions", None)
    line = (pos.lineno if pos is not None else None) or _line_of(code, lasti)
    return Call(method, receiver, op, line, _text(code, ins[at], receiver, method))


_METHOD_LOADS = {"LOAD_METHOD", "LOAD_ATTR"}


def _is_method_load(x: dis.Instruction) -> bool:
    if x.opname == "LOAD_METHOD":
        return True
    # 3.12+: LOAD_ATTR with the low bit set loads a method; 3.10 and older: x.m(a) may be LOAD_ATTR + CALL_FUNCTION
    return x.opname == "LOAD_ATTR" and (sys.version_info < (3, 11) or sys.version_info >= (3, 12))


def _method_by_position(ins: list[dis.Instruction], at: int) -> int | None:
    """3.11+: the method load of a call starts where the call starts (the receiver's first column);
    the arguments start later, so the last such load before the call is the callee, branches or not."""
    pos = getattr(ins[at], "positions", None)
    if pos is None or pos.lineno is None or pos.col_offset is None:
        return None
    for j in range(at - 1, -1, -1):
        p = ins[j].positions
        if p is None or p.lineno is None or p.col_offset is None:
            continue
        if (p.lineno, p.col_offset) < (pos.lineno, pos.col_offset):
            return None  # left of the call: its callee is no method load
        if ins[j].opname in _METHOD_LOADS and (p.lineno, p.col_offset) == (pos.lineno, pos.col_offset):
            return j if _is_method_load(ins[j]) else None
    return None


def _method_by_stack(ins: list[dis.Instruction], at: int) -> int | None:
    """Without positions: walk back over the arguments by their stack effects (straight-line code only)."""
    need = (ins[at].arg or 0) + (1 if ins[at].opname in _KW_ON_STACK else 0)
    i = at - 1
    while i >= 0 and ins[i].opname in _BEFORE_CALL:
        i -= 1
    depth = 0  # stack items the instructions from i on leave: the arguments are the last `need`
    while depth < need:
        if i < 0:
            return None
        x = ins[i]
        if x.opcode in dis.hasjrel or x.opcode in dis.hasjabs or x.is_jump_target:
            return None  # a branch inside the arguments: do not guess
        depth += dis.stack_effect(x.opcode, x.arg if x.opcode >= dis.HAVE_ARGUMENT else None, jump=False)
        i -= 1
    if depth != need or i < 0 or not _is_method_load(ins[i]):
        return None
    return i


def _chain(ins: list[dis.Instruction], i: int) -> tuple[str, ...] | None:
    names: list[str] = []
    while i >= 0 and ins[i].opname == "LOAD_ATTR" and not (sys.version_info >= (3, 12) and (ins[i].arg or 0) & 1):
        names.append(str(ins[i].argval))
        i -= 1
    if i < 0 or ins[i].opname not in _ROOTS:
        return None
    if ins[i].opname == "LOAD_GLOBAL" and sys.version_info >= (3, 11) and (ins[i].arg or 0) & 1:
        return None  # pushes NULL first: a function about to be called, not a receiver
    names.append(str(ins[i].argval))
    return tuple(reversed(names))


def _line_of(code: types.CodeType, lasti: int) -> int | None:
    line = None
    for start, ln in dis.findlinestarts(code):
        if start > lasti:
            break
        line = ln
    return line


def _text(code: types.CodeType, call: dis.Instruction, receiver: tuple[str, ...] | None, method: str) -> str:
    """The call as the source has it (one line, shortened), else rebuilt from the names."""
    pos = getattr(call, "positions", None)
    if pos and pos.lineno and pos.lineno == pos.end_lineno and pos.col_offset is not None and pos.end_col_offset:
        src = linecache.getline(code.co_filename, pos.lineno).encode()
        seg = src[pos.col_offset : pos.end_col_offset].decode(errors="replace").strip()
        if seg and len(seg) <= 80:
            return seg
    return f"{'.'.join(receiver) if receiver else '<expr>'}.{method}(...)"


class _Missing:
    pass


MISSING: Any = _Missing()


def resolve(chain: tuple[str, ...], local: dict[str, Any], glob: dict[str, Any]) -> Any:
    """Evaluate a chain of names without calling anything (no properties, no __getattr__): MISSING if it cannot."""
    root, *attrs = chain
    if root in local:
        obj = local[root]
    elif root in glob:
        obj = glob[root]
    elif hasattr(builtins, root):
        obj = getattr(builtins, root)
    else:
        return MISSING
    for a in attrs:
        try:
            obj = inspect.getattr_static(obj, a)
        except AttributeError:
            return MISSING
        if isinstance(obj, (property, types.MemberDescriptorType, types.GetSetDescriptorType)):
            return MISSING  # would run code (or read a slot through a descriptor): do not
    return obj


def service_ranks_in(comm: Any, session: Any, services: list[int]) -> list[tuple[int, int]] | None:
    """(rank in ``comm``, rank in the session) of every service rank ``comm`` includes; None if ``comm`` is
    no communicator. Local calls only (group queries)."""
    if "mpi4py.MPI" not in sys.modules:
        return None  # MPI never loaded: nothing can be a communicator (and pure tests stay MPI-free)
    from mpi4py import MPI

    if not isinstance(comm, MPI.Comm) or comm == MPI.COMM_NULL:
        return None
    groups = [comm.Get_group()]
    if isinstance(comm, MPI.Intercomm):
        groups.append(comm.Get_remote_group())
    base = session.Get_group()
    try:
        found: list[tuple[int, int]] = []
        for g in groups:
            found += [
                (r, s) for r, s in zip(MPI.Group.Translate_ranks(base, services, g), services) if r != MPI.UNDEFINED
            ]
        return found
    finally:
        for g in [*groups, base]:
            g.Free()


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


class Watchdog:
    """Per client: sample the session thread's frame each tick; report a call stuck for ``hang_s``."""

    def __init__(self, thread_id: int, hang_s: float, session: Any, services: list[int]) -> None:
        self.thread_id = thread_id
        self.hang_s = hang_s
        self.session = session
        self.services = services
        self._frame: Any = None
        self._lasti = -1
        self._since = 0.0
        self._judged = False
        self.reported = False

    def poll(self, now: float | None = None) -> dict[str, Any] | bool | None:
        """A report (dict) when the thread has been stuck in a blocking MPI call for ``hang_s``; True when
        a reported thread moved on; None otherwise. Costs a dict lookup while the frame moves."""
        now = time.monotonic() if now is None else now
        frame = sys._current_frames().get(self.thread_id)
        if frame is None or frame is not self._frame or frame.f_lasti != self._lasti:
            moved = self.reported
            self._frame, self._lasti, self._since = frame, frame.f_lasti if frame else -1, now
            self._judged = self.reported = False
            return True if moved else None
        if self._judged or now - self._since < self.hang_s:
            return None
        self._judged = True
        report = self.judge(frame, now - self._since)
        self.reported = report is not None
        return report

    def judge(self, frame: Any, stuck_s: float) -> dict[str, Any] | None:
        if frame.f_code.co_filename.startswith(_PACKAGE):
            return None  # chronompi's own calls (they poll; a slow visor is not the science code's hang)
        call = call_at(frame.f_code, frame.f_lasti)
        if call is None:
            return None
        report: dict[str, Any] = {
            "where": f"{frame.f_code.co_filename}:{call.lineno or frame.f_lineno}",
            "call": call.text,
            "op": call.op,
            "stuck_s": round(stuck_s, 1),
            "ranks": [],
        }
        obj = MISSING if call.receiver is None else resolve(call.receiver, frame.f_locals, frame.f_globals)
        if obj is MISSING:
            return {**report, "kind": UNRESOLVED}
        ranks = service_ranks_in(obj, self.session, self.services)
        if ranks is None:
            return None  # not a communicator (a Request, a socket, ...): not ours to judge
        if not ranks:
            return {**report, "kind": CLIENTS_ONLY}
        kind = SERVICE_COLLECTIVE if call.op == "collective" else SERVICE_P2P
        return {**report, "kind": kind, "ranks": [list(p) for p in ranks]}


class HangJudge:
    """The visor's view of the clients' hang reports (no MPI)."""

    def __init__(self) -> None:
        self.blocked: dict[int, dict[str, Any]] = {}  # client rank -> its report, in arrival order
        self.warned: set[str] = set()

    def report(self, rank: int, info: dict[str, Any]) -> str | None:
        """Record a report; the text of a warning to log (once per call site) for an unresolved receiver."""
        self.blocked.pop(rank, None)
        self.blocked[rank] = {**info, "rank": rank}
        if info["kind"] == UNRESOLVED and info["where"] not in self.warned:
            self.warned.add(info["where"])
            return (
                f"client rank {rank} has been blocked for {info['stuck_s']:.0f} s in {info['call']} at "
                f"{info['where']}; chronompi cannot tell which communicator that is: if it includes the service "
                "ranks it never returns (use client.comm, or run under `chronompi record`)"
            )
        return None

    def moved(self, rank: int) -> None:
        self.blocked.pop(rank, None)

    def verdict(self, live: set[int]) -> dict[str, Any] | None:
        """The report that proves the job hangs, or None: a collective with service ranks at once; a
        point-to-point call with service ranks once every live client is blocked."""
        for info in self.blocked.values():
            if info["kind"] == SERVICE_COLLECTIVE:
                return info
        if live and live <= set(self.blocked):
            for info in self.blocked.values():
                if info["kind"] == SERVICE_P2P:
                    return info
        return None


def hang_message(info: dict[str, Any], role_of: Sequence[str]) -> str:
    """The one line the visor prints; ``role_of``: the role of every session rank."""
    what = ", ".join(f"{r} ({role_of[s]})" for r, s in info["ranks"])
    if info["kind"] == SERVICE_COLLECTIVE:
        why = "a collective there never completes"
        head = f"client rank {info['rank']} hangs in {info['call']} at {info['where']}"
    else:
        why = "every client is blocked and nothing there will ever be matched"
        head = f"client rank {info['rank']} hangs in {info['call']} at {info['where']} (all clients blocked)"
    return (
        f"chronompi: {head}: that communicator includes chronompi's service ranks (its ranks {what}), which serve "
        f"the session and never take part in the program's communication, so {why}; use client.comm (the clients' "
        "own communicator) instead, or run the program under `chronompi record`, where MPI.COMM_WORLD is the "
        "clients' communicator. Writing what was recorded, then aborting the job."
    )
