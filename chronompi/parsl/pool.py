"""HTEX worker pools on client ranks: :func:`serve_pools` and :class:`ChronompiPoolProvider`.

``serve_pools(client)`` is collective over ``client.comm``. The root (client rank 0) gets a
:class:`ChronompiPoolProvider`, a Parsl ``ExecutionProvider`` for its ``HighThroughputExecutor``:
``submit()`` starts no process, it hands the launch command (``process_worker_pool.py ...``)
to a free pool rank over a duplicate of ``client.comm``. Every other client rank is a pool rank:
it runs that command as a subprocess (without the rank's MPI identity in its environment, so
nothing in the pool can join the MPI job) and records the monitoring messages of the pool's
workers -- WORKER_TASK_INFO and RESOURCE_INFO, sent by :class:`~chronompi.parsl.ChronompiPoolRadio`
through the local channel (:mod:`chronompi.parsl.channel`) -- with its own chronompi client into
its own keeper, never through the driver. ``provider.close()`` (or leaving ``with provider:``)
stops the pool ranks; they then return ``None`` from ``serve_pools``.

Control messages (small, pickled, on the duplicate communicator, so never mixed with the user's):
the root sends ``("start", job_id, command, script_dir)``, ``("cancel", job_id)`` and
``("stop",)`` on ``TAG_DOWN``; a pool rank answers ``("started", job_id, pid)``,
``("exited", job_id, returncode)`` and, last, ``("stopped", stats)`` on ``TAG_UP``. MPI's
non-overtaking rule orders each rank's messages, so the root sees a job's ``exited`` before the
rank's ``stopped``.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from parsl.jobs.states import TERMINAL_STATES, JobState, JobStatus
from parsl.providers.base import ExecutionProvider
from parsl.providers.errors import ExecutionProviderException

from ..progress import Backoff
from .channel import SOCKET_ENV, ChannelReceiver
from .sink import DEFAULT_CHRONICLE, ChronicleSink, ParslMonitoringError

if TYPE_CHECKING:
    from ..client import Client

log = logging.getLogger(__name__)

TAG_DOWN = 4711  # root -> pool rank
TAG_UP = 4712  # pool rank -> root
#: Environment prefixes of a rank's MPI identity; a worker pool must not inherit them (MPI_Init there hangs).
MPI_IDENTITY_PREFIXES = ("OMPI_", "PMIX_", "PMI_", "PRTE_", "MPI_LOCAL", "HYDRA_", "I_MPI_")
TERMINATE_GRACE_S = 5.0
#: How long ``cancel()`` waits for the pool ranks to report their cancelled pools exited (they SIGKILL a pool
#: that ignores SIGTERM for TERMINATE_GRACE_S, and wait as long again).
CANCEL_WAIT_S = 2 * TERMINATE_GRACE_S + 5.0


def pool_env(base: dict[str, str], socket_path: str) -> dict[str, str]:
    """The environment of a worker pool: ``base`` without the MPI identity, plus the channel's socket."""
    env = {k: v for k, v in base.items() if not k.startswith(MPI_IDENTITY_PREFIXES)}
    env[SOCKET_ENV] = socket_path
    return env


def serve_pools(client: Client, root: int = 0, chronicle: str = DEFAULT_CHRONICLE) -> ChronompiPoolProvider | None:
    """Collective over ``client.comm``: the root gets the provider, the other ranks serve worker pools.

    On a pool rank this returns ``None`` once the root closed its provider; the messages of the
    pools' workers are then recorded (chronicle ``chronicle``) and flushed.
    """
    comm = client.comm
    size = comm.Get_size()
    if size < 2 or not 0 <= root < size:  # the same check on every rank, before any message: all fail together
        raise ValueError(
            f"serve_pools needs a root among the client ranks and at least one other client rank "
            f"(got root={root}, {size} client rank(s)); launch more ranks: with one visor, keeper and grapher, "
            "chronompi mpirun -n 5 runs a driver and one pool rank"
        )
    dup = comm.Dup()
    if dup.Get_rank() == root:
        return ChronompiPoolProvider(dup, root)
    rank = PoolRank(client, dup, root, chronicle)
    try:
        rank.run()
    finally:
        dup.Free()
    return None


@dataclass
class _Job:
    rank: int
    state: JobState = JobState.PENDING
    exit_code: int | None = None
    stdout_path: str | None = None
    stderr_path: str | None = None


class ChronompiPoolProvider(ExecutionProvider):
    """Parsl provider whose blocks are the pool ranks of a chronompi job (one worker pool a rank).

    Made by :func:`serve_pools` on the root. ``init_blocks = min_blocks = max_blocks`` = the number
    of pool ranks; ``nodes_per_block = 1``. ``close()`` stops every pool rank and waits for their
    statistics (``self.stats``: per rank, the messages recorded per story and errors); it raises
    :class:`~chronompi.parsl.ParslMonitoringError` if a pool rank could not record a message.
    A context manager; ``close()`` is safe to call twice.
    """

    def __init__(self, comm: Any, root: int = 0) -> None:
        self.comm = comm
        self.root = root
        self.ranks = [r for r in range(comm.Get_size()) if r != root]
        self.init_blocks = self.min_blocks = self.max_blocks = len(self.ranks)
        self.nodes_per_block = 1
        self.parallelism = 1.0
        self.script_dir: str | None = None
        self.resources: dict[object, Any] = {}
        self.cores_per_node = None
        self.mem_per_node = None
        self.stats: dict[int, dict[str, Any]] = {}
        self._jobs: dict[str, _Job] = {}
        self._busy: dict[int, str] = {}  # pool rank -> its job
        self._lock = threading.Lock()  # submit / status / cancel come from Parsl's threads
        self._seq = 0
        self._closed = False

    @property
    def label(self) -> str:
        return "chronompi-pools"

    @property
    def status_polling_interval(self) -> int:
        return 1

    def submit(self, command: str, tasks_per_node: int, job_name: str = "parsl.auto") -> str:
        with self._lock:
            self._poll()
            free = [r for r in self.ranks if r not in self._busy]
            if self._closed or not free:
                raise ExecutionProviderException(
                    f"no free pool rank for {job_name!r}: all {len(self.ranks)} run a worker pool"
                    if not self._closed
                    else "the ChronompiPoolProvider is closed"
                )
            rank = free[0]
            self._seq += 1
            job_id = f"rank{rank}.{self._seq}"
            job = self._jobs[job_id] = _Job(rank)
            if self.script_dir:
                job.stdout_path = os.path.join(self.script_dir, f"{job_name}.{job_id}.stdout")
                job.stderr_path = os.path.join(self.script_dir, f"{job_name}.{job_id}.stderr")
            self._busy[rank] = job_id
            self.comm.send(("start", job_id, command, job.stdout_path, job.stderr_path), dest=rank, tag=TAG_DOWN)
            log.info("worker pool %s handed to client rank %d", job_id, rank)
            return job_id

    def status(self, job_ids: Any) -> list[JobStatus]:
        with self._lock:
            self._poll()
            out = []
            for j in job_ids:
                job = self._jobs.get(j)
                if job is None:
                    out.append(JobStatus(JobState.UNKNOWN, f"no job {j!r}"))
                    continue
                out.append(JobStatus(job.state, None, job.exit_code, job.stdout_path, job.stderr_path))
            return out

    def cancel(self, job_ids: Any) -> list[bool]:
        """Cancel the blocks ``job_ids``; returns once their pools have exited (their ranks are free again).

        Returning only then is what keeps the final NODE_INFO of a retired block: Parsl holds a block's
        managers (the interchange queues that message on its ZMQ radio), cancels the block and, at cleanup,
        terminates the interchange right after. A cancel that returned at once (a message to the pool rank)
        left the interchange a millisecond or two to send it, and under load it died with the message
        unsent. LocalProvider's cancel runs a shell command, tens of milliseconds."""
        with self._lock:
            self._poll()
            done, cancelled = [], []
            for j in job_ids:
                job = self._jobs.get(j)
                if job is None or job.state in TERMINAL_STATES:
                    done.append(False)
                    continue
                self.comm.send(("cancel", j), dest=job.rank, tag=TAG_DOWN)
                job.state = JobState.CANCELLED
                cancelled.append(job)
                done.append(True)
            self._wait_exited(cancelled)
            return done

    def _wait_exited(self, jobs: list[_Job]) -> None:
        """Apply the pool ranks' reports until each of ``jobs`` has its exit code, at most CANCEL_WAIT_S."""
        deadline = time.monotonic() + CANCEL_WAIT_S
        backoff = Backoff(1e-4, 0.01)
        while any(job.exit_code is None for job in jobs):
            if time.monotonic() > deadline:
                log.warning(
                    "cancelled worker pool(s) on rank(s) %s not reported exited after %.0f s",
                    sorted(job.rank for job in jobs if job.exit_code is None),
                    CANCEL_WAIT_S,
                )
                return
            backoff.step(self._poll() > 0)

    def _poll(self) -> int:
        """Apply the pool ranks' reports that have arrived (never blocks); the number applied."""
        n = 0
        while (msg := self.comm.improbe(tag=TAG_UP)) is not None:
            self._apply(msg.recv())
            n += 1
        return n

    def _apply(self, report: tuple[Any, ...]) -> None:
        what = report[0]
        if what == "stopped":
            stats = report[1]
            self.stats[stats["rank"]] = stats
            return
        job = self._jobs[report[1]]
        if what == "started":
            if job.state == JobState.PENDING:
                job.state = JobState.RUNNING
        elif what == "exited":
            job.exit_code = report[2]
            if job.state != JobState.CANCELLED:
                job.state = JobState.COMPLETED if report[2] == 0 else JobState.FAILED
            self._busy.pop(job.rank, None)

    def close(self) -> None:
        """Stop every pool rank (their pools are terminated), wait until each has flushed what it recorded."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for r in self.ranks:
                self.comm.send(("stop",), dest=r, tag=TAG_DOWN)
            backoff = Backoff(1e-4, 0.05)
            while len(self.stats) < len(self.ranks):
                backoff.step(self._poll() > 0)
            self.comm.Free()
        errors = {r: s for r, s in self.stats.items() if s["errors"]}
        log.info("chronompi worker pools stopped: %s", {r: s["counts"] for r, s in self.stats.items()})
        if errors:
            raise ParslMonitoringError(
                "worker pool rank(s) could not record monitoring messages: "
                + "; ".join(f"rank {r}: {s['errors']} error(s), first {s['first_error']}" for r, s in errors.items())
            )

    def __enter__(self) -> ChronompiPoolProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class PoolRank:
    """A pool rank: runs the worker pools the root hands it, records their workers' messages."""

    client: Client
    comm: Any
    root: int
    chronicle: str
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    errors: int = 0
    first_error: str | None = None
    busy_s: float = 0.0  # seconds the recording thread spent logging (not waiting in recv)

    def run(self) -> None:
        self.setup()
        try:
            backoff = Backoff(1e-4, 0.05)  # control messages are rare: poll them, sleeping up to 50 ms
            while not self.stopping:
                backoff.step(self.step())
            self.drain()
        finally:
            self.close()

    def setup(self) -> None:
        self.stopping = False
        self.channel = ChannelReceiver()
        self.sink = ChronicleSink(self.client, self.chronicle)
        # the recording thread blocks in recv on the channel: no polling on the data path
        self.thread = threading.Thread(target=self.channel.serve, args=(self._record,), name="chronompi-pool-channel")
        self.thread.start()
        log.info("pool rank %d records worker messages from %s", self.comm.Get_rank(), self.channel.path)

    def _record(self, kind: str, payload: bytes) -> None:
        t0 = time.perf_counter()
        try:
            self.sink.record_encoded(kind, payload)
        except Exception as exc:  # noqa: BLE001 - keep recording: one bad message must not stop the rest
            self.errors += 1
            if self.first_error is None:
                self.first_error = repr(exc)
                log.exception("pool rank: could not record a %s message", kind)
        self.busy_s += time.perf_counter() - t0

    def step(self) -> bool:
        """One non-blocking pass: a control message from the root, pools that exited."""
        progressed = False
        msg = self.comm.improbe(source=self.root, tag=TAG_DOWN)
        if msg is not None:
            self._handle(msg.recv())
            progressed = True
        for job_id, proc in list(self.procs.items()):
            if proc.poll() is not None:
                del self.procs[job_id]
                self.comm.send(("exited", job_id, proc.returncode), dest=self.root, tag=TAG_UP)
                progressed = True
        return progressed

    def _handle(self, cmd: tuple[Any, ...]) -> None:
        if cmd[0] == "start":
            _, job_id, command, out, err = cmd
            self.procs[job_id] = self._launch(command, out, err)
            self.comm.send(("started", job_id, self.procs[job_id].pid), dest=self.root, tag=TAG_UP)
        elif cmd[0] == "cancel":
            proc = self.procs.get(cmd[1])
            if proc is not None:
                _terminate(proc)
        elif cmd[0] == "stop":
            self.stopping = True

    def _launch(self, command: str, out: str | None, err: str | None) -> subprocess.Popen[bytes]:
        env = pool_env(dict(os.environ), self.channel.path)
        stdout = open(out, "wb") if out else None  # noqa: SIM115 - the child holds it; closed below
        stderr = open(err, "wb") if err else None  # noqa: SIM115
        try:
            # a session of its own: cancel/stop signal the pool and every worker it started
            return subprocess.Popen(
                ["/bin/sh", "-c", command], env=env, stdout=stdout, stderr=stderr, start_new_session=True
            )
        finally:
            for f in (stdout, stderr):
                if f is not None:
                    f.close()

    def drain(self) -> None:
        """Terminate the pools, record everything their workers sent, flush, report to the root."""
        for job_id, proc in list(self.procs.items()):
            _terminate(proc)
            self.comm.send(("exited", job_id, proc.returncode), dest=self.root, tag=TAG_UP)
        self.procs.clear()
        self.channel.stop()  # queued after every datagram of the (now dead) workers
        self.thread.join()
        self.client.flush()
        self.sink.release()
        stats = {
            "rank": self.comm.Get_rank(),
            "client": self.client.id,
            "host": socket.gethostname(),
            "counts": dict(self.sink.counts),
            "received": self.channel.received,
            "errors": self.errors,
            "first_error": self.first_error,
            "busy_s": self.busy_s,
        }
        self.comm.send(("stopped", stats), dest=self.root, tag=TAG_UP)

    def close(self) -> None:
        """Whatever setup made, even after a failure: pools terminated, the thread stopped, the socket removed."""
        for proc in self.procs.values():
            _terminate(proc)
        thread, channel = getattr(self, "thread", None), getattr(self, "channel", None)
        if channel is not None:
            if thread is not None and thread.is_alive():
                channel.stop()
                thread.join()
            channel.close()


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the pool's session (the pool and every worker it started), SIGKILL after a grace period."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)  # the whole session, even when its leader has exited already
        except ProcessLookupError:
            pass
        try:
            proc.wait(TERMINATE_GRACE_S)
            return
        except subprocess.TimeoutExpired:
            log.warning("worker pool %d ignored %s", proc.pid, sig.name)
