"""``ChronompiHub``: a Parsl ``MonitoringHub`` that records every monitoring message into a chronicle.

Every monitoring message of a Parsl workflow -- the DataFlowKernel's own
WORKFLOW_INFO and TASK_INFO, BLOCK_INFO from executors, NODE_INFO from the
HTEX interchange, WORKER_TASK_INFO and RESOURCE_INFO from workers, whichever
radio carried them -- ends up in the hub's ``resource_msgs`` queue. That
queue is handed to executors and radio receivers, possibly in other
processes, so it stays a multiprocessing queue; instead of Parsl's database
manager process, a consumer thread of the driver process takes the messages
off it and logs them with the (thread-safe) chronompi client. ``close()``
drains the queue completely, flushes the client and releases the stories.

A put from the driver process itself (the DataFlowKernel's own radio: TASK_INFO,
WORKFLOW_INFO) does not travel through the queue's pipe: it goes to an in-process
queue, unpickled (:class:`HubQueue`). A multiprocessing queue would pickle it in a
feeder thread and unpickle it in the consumer, both in this process and under its
GIL: 26 us a message, more than the encoding (20 us).
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.queues
import os
import queue
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from parsl.monitoring.monitoring import MonitoringHub

from .sink import DEFAULT_CHRONICLE, ChronicleSink, ParslMonitoringError, register_client

if TYPE_CHECKING:
    from ..client import Client

log = logging.getLogger(__name__)

_STOP = "chronompi.parsl.hub-stop"
_IDLE_WAIT_S = (0.002, 0.05)  # the consumer blocks on the in-process queue this long before it looks at the
# pipe again: the first when messages came last time, doubling up to the second while nothing comes


class HubQueue(multiprocessing.queues.Queue):
    """The hub's ``resource_msgs``: a multiprocessing queue (spawn context, as Parsl's) whose ``put``
    in the process that made it goes to an in-process queue instead (no pickle, no pipe, no feeder
    thread). Other processes -- spawned with it pickled, or forked -- put through the pipe."""

    def __init__(self) -> None:
        super().__init__(ctx=multiprocessing.get_context("spawn"))
        self._owner = os.getpid()
        self._local: queue.SimpleQueue[Any] | None = queue.SimpleQueue()

    def __getstate__(self) -> Any:
        return (super().__getstate__(), self._owner)

    def __setstate__(self, state: Any) -> None:
        super().__setstate__(state[0])
        self._owner, self._local = state[1], None

    def put(self, obj: Any, block: bool = True, timeout: float | None = None) -> None:
        if self._local is not None and os.getpid() == self._owner:
            self._local.put(obj)
        else:
            super().put(obj, block, timeout)

    def local(self) -> queue.SimpleQueue[Any]:
        assert self._local is not None and os.getpid() == self._owner, "only the hub's own process reads it"
        return self._local


_APPLICATION_ID = 0x43484D50  # b"CHMP": SQLite's application_id of the databases this hub writes


def database_path(endpoint: str) -> Path:
    """The file of ``sqlite:///PATH`` (relative) or ``sqlite:////PATH`` (absolute), as SQLAlchemy reads it."""
    prefix = "sqlite:///"
    if not endpoint.startswith(prefix) or len(endpoint) == len(prefix):
        raise ParslMonitoringError(
            f"logging_endpoint={endpoint!r}: chronompi's hub writes SQLite files only (sqlite:///PATH); for "
            "other databases rebuild the tables with chronompi export parsl --format parquet"
        )
    return Path(endpoint[len(prefix) :])


def written_here(path: Path) -> bool:
    """Whether the SQLite file ``path`` is one this hub wrote (its application_id)."""
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return int(con.execute("PRAGMA application_id").fetchone()[0]) == _APPLICATION_ID
        finally:
            con.close()
    except sqlite3.Error:
        return False


def write_database(store: str | os.PathLike[str], path: Path, chronicle: str) -> None:
    """Parsl's monitoring database at ``path``, rebuilt from ``chronicle`` of ``store``: written beside it, then
    renamed over it (a reader never sees half a database)."""
    import sqlite3

    from .export import export_parsl

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        export_parsl(store, tmp, chronicle)
        con = sqlite3.connect(tmp)
        try:
            con.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
            con.commit()
        finally:
            con.close()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class ChronompiHub(MonitoringHub):
    """Parsl monitoring into chronompi: pass it as ``Config(monitoring=ChronompiHub(client))``, or in a driver
    started with plain ``python`` (no mpirun) as ``Config(monitoring=ChronompiHub(store="parsl-store"))``.

    ``client`` is the chronompi :class:`~chronompi.Client` of the rank that runs
    the Parsl driver; without one, :meth:`start` starts a session of this process's own (its service ranks
    spawned, :mod:`chronompi.embed`) writing into ``store`` (default ``chronompi-store``), and
    :meth:`close` ends it, every message stored; messages go to chronicle ``chronicle`` (created if
    missing), one story per message type (``TASK_INFO``, ``WORKFLOW_INFO``,
    ``RESOURCE_INFO``, ``NODE_INFO``, ``BLOCK_INFO``, ``WORKER_TASK_INFO``).
    The other arguments mean what they mean for Parsl's ``MonitoringHub``.
    With ``logging_endpoint`` (``sqlite:///PATH``, as for Parsl's hub) :meth:`close` writes Parsl's
    monitoring database there, rebuilt from the store's chronicle (every workflow recorded into it, as
    Parsl's accumulates; a database this hub wrote before is replaced, any other file is refused at
    :meth:`start`). Without it, a hub of its own session (no ``client``) writes it where Parsl's hub
    would, ``RUN_DIR/monitoring.db``; a hub given a ``client`` writes none (``chronompi export parsl``,
    once or ``--follow``).
    ``register=True`` makes ``client`` this process's recorder for :class:`~chronompi.parsl.ChronompiRadio`.
    """

    def __init__(
        self,
        client: Client | None = None,
        chronicle: str = DEFAULT_CHRONICLE,
        workflow_name: str | None = None,
        workflow_version: str | None = None,
        monitoring_debug: bool = False,
        resource_monitoring_enabled: bool = True,
        resource_monitoring_interval: float = 30,
        register: bool = True,
        store: str | os.PathLike[str] | None = None,
        logging_endpoint: str | None = None,
    ) -> None:
        # MonitoringHub.__init__ is not called: it insists on sqlalchemy (its database is rebuilt from the store)
        self.client = client  # (None: a session of our own, made in start())
        self.store = store
        self._own_session = False
        self.chronicle = chronicle
        self.register = register
        self.hub_address = None
        self.hub_port = None
        self.hub_port_range = None
        self.logging_endpoint = logging_endpoint  # (Parsl's tests set it after construction: read at start)
        self._database: Path | None = None
        self.workflow_name = workflow_name
        self.workflow_version = workflow_version
        self.monitoring_debug = monitoring_debug
        self.resource_monitoring_enabled = resource_monitoring_enabled
        self.resource_monitoring_interval = resource_monitoring_interval
        self.monitoring_hub_active = False
        self.sink: ChronicleSink | None = None
        self.counts: dict[str, int] = {}
        self.errors = 0
        self.first_error: BaseException | None = None
        #: seconds the consumer thread spent recording (the one single-threaded part: compare with the run's length)
        self.busy_s = 0.0
        self.n_taken = 0  # messages the consumer thread took off the queue
        self._thread: threading.Thread | None = None

    def start(self, dfk_run_dir: str, config_run_dir: str | os.PathLike[str], log_config: Any) -> None:
        if self.monitoring_hub_active:
            raise ParslMonitoringError("this ChronompiHub is already started; use one hub per Parsl config")
        os.makedirs(dfk_run_dir, exist_ok=True)
        if self.logging_endpoint is None and self.client is None:  # the drop-in: where Parsl's hub writes its own
            self.logging_endpoint = f"sqlite:///{os.fspath(config_run_dir)}/monitoring.db"
        self._database = database_path(self.logging_endpoint) if self.logging_endpoint is not None else None
        if self._database is not None and self._database.exists() and not written_here(self._database):
            raise ParslMonitoringError(
                f"logging_endpoint: {self._database} exists and was not written by chronompi's hub; it is left as "
                "it is: move it away or give another logging_endpoint (sqlite:///PATH)"
            )
        if self.client is None:  # a plain driver (python, no mpirun): a session of its own, services spawned
            from .. import embed

            cfg = {"storage": {"root": str(self.store)}} if self.store is not None else None
            self.client = embed.start(cfg, capture_logging=False, rebind=False)
            self._own_session = True
        assert self.client is not None
        self.sink = ChronicleSink(self.client, self.chronicle)
        if self.register:
            register_client(self.client)
        self._queue = HubQueue()
        self.resource_msgs = self._queue
        self.monitoring_hub_active = True
        self._thread = threading.Thread(target=self._consume, name="chronompi-parsl-hub", daemon=True)
        self._thread.start()
        log.info("chronompi Parsl hub recording into chronicle %r", self.chronicle)

    def _consume(self) -> None:
        """Record from the in-process queue and the pipe until the stop mark, then whatever the pipe
        still holds (producers in other processes have shut down by then)."""
        local, pipe = self._queue.local(), self._queue
        wait = _IDLE_WAIT_S[0]
        while True:
            try:
                msg = local.get(timeout=wait)
            except queue.Empty:
                msg = None
            stop = msg == _STOP
            got = self.n_taken
            if msg is not None and not stop:
                self._record(msg)
                while True:  # the rest of what is there, without waiting
                    try:
                        msg = local.get_nowait()
                    except queue.Empty:
                        break
                    if msg == _STOP:
                        stop = True
                        break
                    self._record(msg)
            while True:
                try:
                    msg = pipe.get(timeout=0.05) if stop else pipe.get_nowait()
                except queue.Empty:
                    break
                self._record(msg)
            if stop:
                return
            wait = _IDLE_WAIT_S[0] if self.n_taken != got else min(2 * wait, _IDLE_WAIT_S[1])

    def _record(self, msg: Any) -> None:
        sink = self.sink
        assert sink is not None
        self.n_taken += 1
        t0 = time.perf_counter()
        try:
            sink.record(msg)
        except Exception as exc:  # noqa: BLE001 - keep draining: one bad message must not stop the rest (Ctrl-C does)
            self.errors += 1
            if self.first_error is None:
                self.first_error = exc
                log.exception("chronompi Parsl hub: could not record a message")
        self.busy_s += time.perf_counter() - t0

    def close(self) -> None:
        """Record everything still queued, flush the client, release the stories."""
        if not self.monitoring_hub_active:
            return
        self.monitoring_hub_active = False
        t0 = time.monotonic()
        self.resource_msgs.put(_STOP)  # type: ignore[arg-type]  # after every message already in the pipe: producers are shut down by now
        assert self._thread is not None
        self._thread.join()
        self.resource_msgs.close()
        self.resource_msgs.join_thread()
        assert self.sink is not None
        self.counts = dict(self.sink.counts)
        assert self.client is not None
        self.client.flush()
        self.sink.release()
        if self.register:
            register_client(None)
        log.info("chronompi Parsl hub closed in %.3f s: %s, %d errors", time.monotonic() - t0, self.counts, self.errors)
        if self._own_session:  # every message in the store before the driver goes on
            from .. import embed

            embed.finalize()
            self._own_session = False
        elif self._database is not None:  # the session goes on: what was recorded is readable once committed
            self.client.sync()
        if self._database is not None:
            write_database(self.client.ctx.cfg.storage.root, self._database, self.chronicle)
        if self.first_error is not None:
            raise ParslMonitoringError(
                f"{self.errors} monitoring message(s) could not be recorded; first: {self.first_error!r}"
            ) from self.first_error
