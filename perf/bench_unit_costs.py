"""Per-message and per-byte costs that perf/model_scale.py scales up (issue 17, "Scale on paper").

Measured in this one process on the real code paths, fed fake inputs: a ``Visor`` built over
``MPI.COMM_SELF`` with the roles of a large job (its idle ``step``, its ``_clock`` and ``_requests``
answering messages this process sent itself, a membership change planned and pickled, the run record
rewritten), the keeper's and grapher's codec and merge functions on numpy arrays, ``SegmentWriter`` on a
temporary store. One tiny 2-rank ``mpirun`` over TCP on the loopback gives a network round trip and
bandwidth, and a few subprocesses the CPU a rank spends importing. Each cost is the median of
``--rounds`` rounds, with the 1-minute load average beside every round.

    python perf/bench_unit_costs.py [--rounds 3] [--out perf/out/unit-costs.jsonl]

One JSON line per cost: ``cost``, ``value``, ``unit``, ``rounds`` (each round's value), ``load``,
``what``, ``git_commit``, ``date``, ``host``. Takes about a minute on 2 shared cores.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402

sys.path.insert(0, str(benchlib.ROOT))  # this checkout's chronompi, not another one installed

PER_NODE = 64  # ranks per node of the fake layouts
SMALL_NODES, LARGE_NODES = 4, 32  # two layouts, for a fixed + per-rank fit


def _visor(nodes: int, root: str) -> Any:
    """A visor over COMM_SELF that believes it serves ``nodes`` x PER_NODE ranks (default layout)."""
    from mpi4py import MPI

    from chronompi.config import as_config
    from chronompi.layout import assign_roles
    from chronompi.protocol import Context
    from chronompi.store.format import init_store
    from chronompi.visor import Visor

    size = nodes * PER_NODE
    node_of = [r // PER_NODE for r in range(size)]
    init_store(root)
    cfg = as_config({"storage": {"root": root}})
    roles = assign_roles(size, cfg.layout, node_of)
    ctx = Context(MPI.COMM_SELF.Dup(), 0, "visor", roles, cfg, 1, [f"n{n}" for n in node_of])
    os.environ.pop("CHRONOMPI_LAUNCHER", None)  # no run marker line on stdout
    return Visor(ctx)


def _per_call(fn: Callable[[], Any], min_s: float = 0.25) -> float:
    """Seconds per call of ``fn``, repeated for at least ``min_s``."""
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= min_s:
            return dt / n


class _ProbeOnce:
    """The visor's communicator, but its next Iprobe sees at most one message: on COMM_SELF the
    reply to a clock ping carries the ping's tag and would otherwise be taken for the next ping."""

    def __init__(self, comm: Any) -> None:
        self.comm, self.left = comm, 0

    def Iprobe(self, *args: Any) -> bool:  # noqa: N802 (mpi4py's name)
        self.left, left = 0, self.left
        return bool(left) and self.comm.Iprobe(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.comm, name)


def visor_costs(tmp: str) -> dict[str, float]:
    from mpi4py import MPI

    from chronompi.protocol import TAG_CLOCK, TAG_REP, TAG_REQ

    out: dict[str, float] = {}
    small, large = _visor(SMALL_NODES, f"{tmp}/vs"), _visor(LARGE_NODES, f"{tmp}/vl")
    ranks = (SMALL_NODES * PER_NODE, LARGE_NODES * PER_NODE)
    steps = (_per_call(small.step), _per_call(large.step))
    out["visor_step_per_rank_ns"] = (steps[1] - steps[0]) / (ranks[1] - ranks[0]) * 1e9
    out["visor_step_fixed_us"] = max(0.0, steps[0] * 1e6 - out["visor_step_per_rank_ns"] * ranks[0] / 1e3)
    saves = (_per_call(lambda: small._save(small.record)), _per_call(lambda: large._save(large.record)))
    out["run_record_write_per_rank_us"] = (saves[1] - saves[0]) / (ranks[1] - ranks[0]) * 1e6

    comm = small.comm
    probe = _ProbeOnce(comm)
    ping, reply = np.empty(0, np.int64), np.empty(1, np.int64)

    def clock() -> None:  # one ping answered by the visor's own code; the client's side is in it too
        req = comm.Isend([ping, MPI.INT64_T], 0, TAG_CLOCK)
        probe.left = 1
        small._clock()
        req.Wait()
        comm.Recv([reply, MPI.INT64_T], 0, TAG_CLOCK)

    small.comm = probe
    out["visor_clock_ping_us"] = _per_call(clock) * 1e6
    small.comm = comm

    def request() -> None:
        req = comm.isend(("show_chronicles",), 0, TAG_REQ)
        small._requests()
        req.wait()
        comm.recv(source=0, tag=TAG_REP)

    out["visor_request_us"] = _per_call(request) * 1e6

    # a pickled control message: fixed cost (a LOAD report) and cost per byte (an epoch table)
    load = ("load", 5, "client", {"wait_s": 0.0, "events": 1.0})
    table = large.elastic.members.latest.to_json()
    nbytes = len(pickle.dumps(table, protocol=5))

    def ctrl(msg: Any) -> Callable[[], None]:
        def go() -> None:
            req = comm.isend(msg, 0, 77)
            comm.recv(source=0, tag=77)
            req.wait()

        return go

    t_small, t_big = _per_call(ctrl(load)), _per_call(ctrl(table))
    out["ctrl_msg_us"] = t_small * 1e6
    out["ctrl_msg_ns_per_byte"] = (t_big - t_small) / nbytes * 1e9

    # an epoch change as the visor plans and pickles it (the MPI part is ctrl_msg_ns_per_byte)
    def change(v: Any) -> tuple[float, int, int, int]:
        sent = [0, 0]

        def fake_send(rank: int, msg: Any) -> None:
            sent[0] += 1
            sent[1] += len(pickle.dumps(msg, protocol=5))

        v.elastic._send = fake_send
        v.elastic.spares.add(10**9)  # one spare to activate
        e = v.elastic.members.latest
        t0 = time.perf_counter()
        v.elastic.request(len(e.keepers) + 1, len(e.graphers), "unit cost")
        return time.perf_counter() - t0, sent[0], sent[1], len(v.ctx.roles.clients)

    dt, msgs, nb, clients = change(_visor(8, f"{tmp}/ve"))
    out["epoch_announce_ns_per_msg_client"] = dt / (msgs * clients) * 1e9
    out["epoch_msg_bytes_per_client"] = nb / (msgs * clients)
    return out


def data_costs(tmp: str) -> dict[str, float]:
    from mpi4py import MPI

    from chronompi import codec, merge
    from chronompi.config import StorageConfig
    from chronompi.store.format import init_store
    from chronompi.store.writer import Run, SegmentWriter

    out: dict[str, float] = {}
    n, k = 4096, 8  # events per chunk; keepers whose chunks a grapher merges per window
    rng = np.random.default_rng(0)

    def events(size: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
        ev = np.zeros(n, codec.EVENT)
        ev["time"] = start + np.arange(n) * k
        ev["client"], ev["seq"] = 7, np.arange(n)
        ev["length"], ev["offset"] = size, np.arange(n) * size
        return ev, rng.integers(0, 255, n * size, dtype=np.uint8)

    keeper, grapher, write = {}, {}, {}
    init_store(f"{tmp}/store")
    cfg = StorageConfig(root=f"{tmp}/store", staging=f"{tmp}/staging", fsync="never")
    w = SegmentWriter(cfg.root, 1, 0, cfg)
    window = [0]
    for size in (64, 1024):
        ev, heap = events(size)
        batch = codec.encode_batch(
            codec.DATA, 7, 0, int(ev["time"][-1]), 9, ev["time"], ev["seq"], np.zeros(n, np.int32), ev["length"], heap
        )

        def keep(batch: np.ndarray = batch, ev: np.ndarray = ev, heap: np.ndarray = heap) -> None:
            b = codec.decode_batch(batch)
            rows = ev[merge.total_order(ev)]
            codec.encode_chunk(codec.DATA, 1, 0, 0, 0, ("c", "s"), rows, b.heap)

        keeper[size] = _per_call(keep) / n
        chunks = [codec.encode_chunk(codec.DATA, i, 0, 0, 0, ("c", "s"), *events(size, i)) for i in range(k)]

        def graph(chunks: list[np.ndarray] = chunks) -> None:
            runs = [(c.events, c.heap) for c in map(codec.decode_chunk, chunks)]
            merge.order_runs(runs)

        grapher[size] = _per_call(graph) / (n * k)

        def append(ev: np.ndarray = ev, heap: np.ndarray = heap) -> None:
            window[0] += 1
            w.append("c", "s", [Run(window[0], ev, heap)])

        write[size] = _per_call(append) / n
    for name, d in (("keeper", keeper), ("grapher", grapher), ("hdf5_append", write)):
        per_byte = (d[1024] - d[64]) / (1024 - 64)
        out[f"{name}_ns_per_event"] = (d[64] - 64 * per_byte) * 1e9
        out[f"{name}_ns_per_byte"] = max(0.0, per_byte * 1e9)  # (below the noise: 0)

    ev, heap = events(64)

    def small_sync() -> None:  # what a sync() costs the grapher: a small append, then fsync
        window[0] += 1
        w.append("c", "s", [Run(window[0], ev[:16], heap[: 16 * 64])])
        w.fsync()

    out["sync_append_fsync_ms"] = _per_call(small_sync) * 1e3
    w.close()

    comm = MPI.COMM_SELF
    status = MPI.Status()

    def notice() -> None:  # a WATERMARK notice as a grapher receives it (Improbe + Mrecv + decode)
        buf = codec.encode_chunk(codec.WATERMARK, 1, 123, window=0)
        req = comm.Isend(buf, 0, 5)
        msg = comm.improbe(0, 5, status)
        while msg is None:
            msg = comm.improbe(0, 5, status)
        into = np.empty(status.Get_count(MPI.BYTE), np.uint8)
        msg.Recv(into)
        req.Wait()
        codec.decode_chunk(into)

    out["notice_msg_us"] = _per_call(notice) * 1e6
    return out


def start_costs() -> dict[str, float]:
    """CPU seconds a plain MPI rank and a chronompi client rank spend importing (subprocesses)."""
    env = {**os.environ, "OMPI_MCA_btl": "^ofi"}

    def cpu(code: str) -> float:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime

    plain = "import numpy\nfrom mpi4py import MPI"
    return {
        "rank_start_cpu_s": cpu(plain),
        "chronompi_import_cpu_s": max(0.0, cpu(plain + "\nimport chronompi.record, chronompi.client") - cpu(plain)),
    }


TCP_CHILD = "--tcp-child"


def tcp_child() -> None:
    """Rank 0 and 1 ping-pong 8 B and 1 MiB; rank 0 prints the round trips (JSON)."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank, res = comm.Get_rank(), {}
    for size, reps in ((8, 300), (1 << 20, 30)):
        buf = np.zeros(size, np.uint8)
        comm.Barrier()
        t0 = time.perf_counter()
        for _ in range(reps):
            if rank == 0:
                comm.Send(buf, 1)
                comm.Recv(buf, 1)
            else:
                comm.Recv(buf, 0)
                comm.Send(buf, 0)
        res[size] = (time.perf_counter() - t0) / reps
    if rank == 0:
        per_byte = (res[1 << 20] - res[8]) / 2 / (1 << 20)
        print(json.dumps({"tcp_rtt_us": res[8] * 1e6, "tcp_ns_per_byte": per_byte * 1e9}))


def tcp_costs() -> dict[str, float]:
    from chronompi.launch import find_mpirun

    argv = [find_mpirun(), "--allow-run-as-root", "-n", "2", "--bind-to", "none"]
    argv += ["--mca", "btl", "tcp,self", "--mca", "btl_tcp_if_include", "lo"]
    argv += [sys.executable, __file__, TCP_CHILD]
    env = {**os.environ, "OMPI_MCA_btl": "tcp,self"}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


UNITS = {
    "visor_step_per_rank_ns": ("ns", "an idle Visor.step(), per rank of the job (fit over 256 and 2048 ranks)"),
    "visor_step_fixed_us": ("us", "an idle Visor.step(), the part that does not grow with ranks"),
    "run_record_write_per_rank_us": ("us", "rewriting runs/r<run>.json (every 10 s), per rank of the job"),
    "visor_clock_ping_us": ("us", "one clock ping answered by Visor._clock (sender's side included)"),
    "visor_request_us": ("us", "one registry request answered by Visor._requests (sender's side included)"),
    "ctrl_msg_us": ("us", "one small pickled control message, isend + recv on COMM_SELF"),
    "ctrl_msg_ns_per_byte": ("ns", "a pickled control message, per byte of its pickle (an epoch table)"),
    "epoch_announce_ns_per_msg_client": ("ns", "Coordinator.request: plan + pickle, per message per client"),
    "epoch_msg_bytes_per_client": ("B", "pickled size of an EPOCH message, per client in its table"),
    "keeper_ns_per_event": ("ns", "decode_batch + total_order + encode_chunk, per event"),
    "keeper_ns_per_byte": ("ns", "the same, per payload byte"),
    "grapher_ns_per_event": ("ns", "decode_chunk + order_runs of 8 keepers' chunks, per event"),
    "grapher_ns_per_byte": ("ns", "the same, per payload byte"),
    "hdf5_append_ns_per_event": ("ns", "SegmentWriter.append (h5py, flush, checksums), per event"),
    "hdf5_append_ns_per_byte": ("ns", "the same, per payload byte"),
    "sync_append_fsync_ms": ("ms", "a 16-event append + SegmentWriter.fsync"),
    "notice_msg_us": ("us", "a WATERMARK notice: encode, Isend, improbe + Mrecv, decode"),
    "rank_start_cpu_s": ("s", "CPU of a process importing numpy and mpi4py.MPI (a plain rank)"),
    "chronompi_import_cpu_s": ("s", "CPU a rank spends importing chronompi.record and .client on top"),
    "tcp_rtt_us": ("us", "MPI round trip of 8 B over TCP on the loopback (2-rank mpirun)"),
    "tcp_ns_per_byte": ("ns", "MPI over TCP on the loopback, per byte one way (1 MiB messages)"),
}


def main() -> None:
    if sys.argv[1:] == [TCP_CHILD]:
        tcp_child()
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(benchlib.PERF / "out" / "unit-costs.jsonl"))
    args = ap.parse_args()
    rounds: dict[str, list[float]] = {}
    loads: list[float] = []
    for r in range(args.rounds):
        loads.append(round(os.getloadavg()[0], 2))
        with tempfile.TemporaryDirectory() as tmp:
            got = {**visor_costs(tmp), **data_costs(tmp), **start_costs(), **tcp_costs()}
        for name, value in got.items():
            rounds.setdefault(name, []).append(value)
        print(f"round {r}: load {loads[-1]}", file=sys.stderr)
    meta = {
        "git_commit": benchlib.git_commit(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": socket.gethostname(),
        "cores": os.cpu_count(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as f:
        for name, values in rounds.items():
            unit, what = UNITS[name]
            row = {"cost": name, "value": round(statistics.median(values), 4), "unit": unit}
            row |= {"rounds": [round(v, 4) for v in values], "load": loads, "what": what, **meta}
            f.write(json.dumps(row) + "\n")
            print(f"{name:36s} {row['value']:>12} {unit:3s} {what}")


if __name__ == "__main__":
    main()
