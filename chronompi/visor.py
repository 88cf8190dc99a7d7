"""The visor: registry of chronicles and stories, clock reference, shutdown
coordination and the run summary.

Registry requests arrive as small pickled tuples on ``TAG_REQ`` and are
answered on ``TAG_REP`` to the asking rank; a client serialises its requests,
so a reply always matches the one request that client has outstanding.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from mpi4py import MPI

from . import stop
from ._version import __version__
from .elastic import Coordinator
from .ending import tell_launcher
from .errors import ChronicleExists, ChronicleInUse, ChronoError, StoryNotAcquired, UnknownChronicle
from .layout import placement
from .names import check_name
from .protocol import (
    DONE,
    FAILED,
    FORCE_END,
    HANG,
    RELEASE,
    SEAL,
    STOP,
    STOP_ACK,
    STORAGE,
    TAG_CLOCK,
    TAG_CTRL,
    TAG_REP,
    TAG_REQ,
    UNHANG,
    Context,
    held_from_start,
)
from .report import process_age_s
from .service import Service, max_rss_mib
from .store.dirs import staging_dir
from .store.format import write_run
from .watchdog import HangJudge, hang_message

log = logging.getLogger(__name__)

HEARTBEAT_S = 10.0  # the run record is rewritten this often while the run lives


@dataclass
class StoryEntry:
    id: int
    holders: set[int] = field(default_factory=set)  # client ranks that hold it
    acquired: int = 0  # acquisitions over the run


@dataclass
class ChronicleEntry:
    attrs: dict[str, Any]
    stories: dict[str, StoryEntry] = field(default_factory=dict)


class Registry:
    """Chronicles and stories; pure bookkeeping, no MPI (unit-tested directly)."""

    def __init__(self) -> None:
        self.chronicles: dict[str, ChronicleEntry] = {}
        self.next_id = 1
        self.ids: dict[tuple[str, str], int] = {}  # kept after destroy: an id is never reused

    def create_chronicle(self, name: str, attrs: dict[str, Any] | None) -> None:
        check_name(name, "chronicle")
        if name in self.chronicles:
            raise ChronicleExists(f"chronicle {name!r} exists already; acquire its stories or pick another name")
        self.chronicles[name] = ChronicleEntry(dict(attrs or {}))

    def _chronicle(self, name: str) -> ChronicleEntry:
        check_name(name, "chronicle")
        try:
            return self.chronicles[name]
        except KeyError:
            raise UnknownChronicle(name) from None

    def destroy_chronicle(self, name: str) -> None:
        c = self._chronicle(name)
        held = sorted(s for s, e in c.stories.items() if e.holders)
        if held:
            raise ChronicleInUse(
                f"chronicle {name!r} still has acquired stories {held}; release them before destroying it"
            )
        del self.chronicles[name]

    def show_chronicles(self) -> list[str]:
        return sorted(self.chronicles)

    def show_stories(self, chronicle: str) -> list[str]:
        return sorted(self._chronicle(chronicle).stories)

    def acquire(self, chronicle: str, story: str, client: int) -> int:
        c = self._chronicle(chronicle)
        check_name(story, "story")
        entry = c.stories.get(story)
        if entry is None:
            key = (chronicle, story)
            sid = self.ids.get(key)
            if sid is None:
                sid = self.ids[key] = self.next_id
                self.next_id += 1
            entry = c.stories[story] = StoryEntry(sid)
        entry.holders.add(client)
        entry.acquired += 1
        return entry.id

    def hold_from_start(self, stories: tuple[tuple[str, str], ...], clients: Iterable[int]) -> None:
        """A fresh registry: every client holds ``stories`` (their chronicles created as needed), with the
        ids :func:`~chronompi.protocol.held_from_start` gives, as if each client had acquired them."""
        assert not self.ids, "stories are held from the start of a fresh registry only"
        clients = list(clients)
        for (chronicle, story), sid in held_from_start(stories).items():
            if chronicle not in self.chronicles:
                self.create_chronicle(chronicle, None)
            for client in clients:
                got = self.acquire(chronicle, story, client)
                assert got == sid, (chronicle, story, got, sid)

    def release(self, chronicle: str, story: str, client: int) -> int:
        """Drop ``client``'s hold; return how many clients still hold the story."""
        c = self._chronicle(chronicle)
        entry = c.stories.get(story)
        if entry is None or client not in entry.holders:
            raise StoryNotAcquired(f"story {chronicle}/{story} is not acquired by this client")
        entry.holders.discard(client)
        return len(entry.holders)

    def handle(self, request: tuple[Any, ...], client: int) -> Any:
        op, *args = request
        if op == "create_chronicle":
            return self.create_chronicle(args[0], args[1])
        if op == "destroy_chronicle":
            return self.destroy_chronicle(args[0])
        if op == "show_chronicles":
            return self.show_chronicles()
        if op == "show_stories":
            return self.show_stories(args[0])
        if op == "acquire":
            return self.acquire(args[0], args[1], client)
        if op == "release":
            return self.release(args[0], args[1], client)
        raise ValueError(f"unknown registry request {op!r}")

    def to_json(self) -> dict[str, Any]:
        return {
            name: {
                "attrs": c.attrs,
                "stories": {s: {"id": e.id, "acquired": e.acquired} for s, e in c.stories.items()},
            }
            for name, c in self.chronicles.items()
        }


def error_reply(exc: Exception) -> tuple[Any, ...]:
    """An exception as a small picklable tuple: (\"err\", class name, message)."""
    return ("err", type(exc).__name__, str(exc))


class Visor(Service):
    role = "visor"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.registry = Registry()
        self.registry.hold_from_start(ctx.stories, ctx.roles.clients)
        self.root = Path(ctx.cfg.storage.root)
        roles = ctx.roles
        self.everyone = [r for r in range(len(roles.role)) if r != ctx.rank]
        self.done: dict[int, tuple[str, dict[str, Any]]] = {}
        self.elastic = Coordinator(self)
        self.sealed = False
        self.failures: list[tuple[int, str, str]] = []
        self.failed_at: float | None = None
        self.forced = False
        self.hangs = HangJudge()  # the clients' reports of calls that cannot return (watchdog.py)
        self.hang: dict[str, Any] | None = None  # the one that ends the run
        self.stop_signal: int | None = None  # the stop signal being drained (stop.py)
        self.stop_at = 0.0
        self.stop_noted_ns = 0
        self.stop_acks: set[int] = set()  # clients that sent all they held
        self.storage: list[dict[str, Any]] = []  # graphers' storage reports, in arrival order (run record)
        self.storage_failed: dict[str, Any] | None = None  # the first grapher that gave up: the run's reason
        self.storage_failed_at = 0.0
        self.replies: list[Any] = []
        self.n_requests = 0
        self.n_pings = 0
        self.status = MPI.Status()
        self.t_start = ctx.started  # the session's start (rank 0 entering session()): wall time begins there
        self.record = self._run_record()
        write_run(self.root, self.record)
        tell_launcher(self.record["run"], self.root)
        self.beat = time.monotonic()

    def _clock(self) -> bool:
        got = False
        ping = np.empty(0, np.int64)
        while self.comm.Iprobe(MPI.ANY_SOURCE, TAG_CLOCK, self.status):
            src = self.status.Get_source()
            self.comm.Recv([ping, MPI.INT64_T], src, TAG_CLOCK)
            now = np.array([time.time_ns()], np.int64)  # read right before the reply goes out
            self.comm.Send([now, MPI.INT64_T], src, TAG_CLOCK)
            self.n_pings += 1
            got = True
        return got

    def _requests(self) -> bool:
        got = False
        while self.comm.Iprobe(MPI.ANY_SOURCE, TAG_REQ, self.status):
            src = self.status.Get_source()
            req = self.comm.recv(source=src, tag=TAG_REQ)
            self.n_requests += 1
            try:
                if req[0] in ("scale", "members"):
                    reply: tuple[Any, ...] = ("ok", self.elastic.handle(req, src))
                else:
                    reply = ("ok", self.registry.handle(req, src))
            except (ChronoError, ValueError, TypeError, IndexError) as exc:  # a bad request never kills the visor
                reply = error_reply(exc)
            self.replies.append(self.comm.isend(reply, src, TAG_REP))
            got = True
        if self.replies and MPI.Request.Testall(self.replies):
            self.replies.clear()
        return got

    def _control(self) -> bool:
        got = False
        while self.comm.Iprobe(MPI.ANY_SOURCE, TAG_CTRL, self.status):
            src = self.status.Get_source()
            msg = self.comm.recv(source=src, tag=TAG_CTRL)
            got = True
            if msg[0] == DONE:
                _, role, rank, stats = msg
                self.done[rank] = (role, stats)
                if role == "client":
                    self.elastic.client_done(rank, stats)
            elif msg[0] == HANG:
                warning = self.hangs.report(msg[1], msg[2])
                if warning:
                    log.warning("%s", warning)
            elif msg[0] == UNHANG:
                self.hangs.moved(msg[1])
            elif msg[0] == STOP:  # a client got a stop signal this rank did not
                self._begin_stop(msg[2])
            elif msg[0] == STOP_ACK:
                self.stop_acks.add(msg[1])
            elif self.elastic.on_ctrl(src, msg):
                pass
            elif msg[0] == FAILED:
                _, rank, host, text = msg
                log.error("client rank %d on %s failed: %s", rank, host, text)
                self.failures.append((rank, host, text))
                if self.failed_at is None:
                    self.failed_at = time.monotonic()
            elif msg[0] == STORAGE:
                self._storage_report(*msg[1:])
        return got

    def _storage_report(self, rank: int, host: str, state: str, info: dict[str, Any]) -> None:
        """A grapher's staging or store fails (or works again): record it; a grapher that gave up ends the run."""
        entry = {"state": state, "rank": rank, "host": host, "time": time.time_ns(), **info}
        self.storage.append(entry)
        (log.error if state in ("gave-up", "abandoned") else log.warning)(
            "grapher rank %d on %s: storage %s: %s", rank, host, state, info.get("error")
        )
        if state == "gave-up" and self.storage_failed is None:
            self.storage_failed = entry
            self.storage_failed_at = time.monotonic()
            self._force_end()  # the healthy graphers write everything the keepers hold, then the job ends
        self.record["storage"] = self.storage
        self._save({**self.record, "alive": time.time_ns()})  # visible at once, to users and fsck

    def _save(self, record: dict[str, Any]) -> None:
        """Write the run record; a store that cannot take it (full, failing) is logged, not fatal."""
        try:
            write_run(self.root, record)
        except OSError as exc:
            log.error("cannot write the run record of run %s into %s: %s", record["run"], self.root, exc)

    def _end_failed(self) -> None:
        """A grapher gave up on its storage: write the record (status failed, the reason), the summary, abort."""
        reason = self.storage_failed
        assert reason is not None
        self._write_manifest("failed", reason=reason)
        self._print_summary()
        unmoved = sorted({p for _, st in self.done.values() for p in st.get("unmoved", [])} | set(reason["unmoved"]))
        log.critical(
            "aborting the job: grapher %d (rank %d on %s) could not write %s (%s) for storage.retry_s=%.0f s; "
            "%d events lost; %s; free space there, then run chronompi fsck %s",
            reason["grapher"],
            reason["rank"],
            reason["host"],
            reason["path"],
            reason["errno_name"] or reason["errno"],
            self.ctx.cfg.storage.retry_s,
            sum(st.get("events_lost", 0) for _, st in self.done.values()) or reason["events_lost"],
            f"segments outside the store: {unmoved}" if unmoved else "no segment is outside the store",
            os.path.abspath(self.root),
        )
        self.comm.Abort(1)

    def _check_failure(self) -> None:
        if self.failed_at is None or self.forced:
            return
        if time.monotonic() - self.failed_at < self.ctx.cfg.service.failure_grace_s:
            return
        clients = set(self.ctx.roles.clients)
        missing = sorted(clients - set(self.done))
        log.error(
            "client(s) %s did not finish within service.failure_grace_s=%.1f s after a client failed: "
            "writing what was recorded, then aborting the job",
            missing,
            self.ctx.cfg.service.failure_grace_s,
        )
        self._force_end()

    def _check_hang(self) -> None:
        """A client is stuck in a call that can never return: say why (one line for the job), then end
        the run as after a failure: the keepers write everything they hold, then the job aborts."""
        if self.forced:
            return
        info = self.hangs.verdict(set(self.ctx.roles.clients) - set(self.done))
        if info is None:
            return
        self.hang = info
        sys.stderr.write(hang_message(info, self.ctx.roles.role) + "\n")
        sys.stderr.flush()
        self._force_end()

    def _force_end(self, why: str = "failure") -> None:
        """End the run early: the keepers treat every client as ended and hand all they hold to the graphers."""
        if self.forced:
            return
        self.forced = True
        for k in sorted(self.elastic.alive_keepers):
            self.comm.send((FORCE_END, why), dest=k, tag=TAG_CTRL)

    # -- stopping on a signal (stop.py) ------------------------------------
    def _begin_stop(self, signum: int) -> None:
        if self.stop_signal is not None:
            return
        self.stop_signal, self.stop_at, self.stop_noted_ns = signum, time.monotonic(), time.time_ns()
        log.info("%s: every client sends what it holds, then the run ends", stop.name(signum))
        for c in sorted(set(self.ctx.roles.clients) - set(self.done)):
            self.comm.send((STOP,), dest=c, tag=TAG_CTRL)

    def _check_stop(self, services: set[int], reported: set[int]) -> None:
        """Drain on a stop signal: once every client sent what it held (or half the grace is over), the
        forced end; once every member wrote what it held (or the grace is over), the stopped run ends."""
        if self.stop_signal is None and stop.received() is not None:
            self._begin_stop(stop.received())  # type: ignore[arg-type]
        if self.stop_signal is None or self.hang is not None:
            return
        grace = self.ctx.cfg.service.stop_grace_s
        waited = time.monotonic() - self.stop_at
        if not self.forced:
            if set(self.ctx.roles.clients) - set(self.done) - self.stop_acks and waited < grace / 2:
                return
            self._force_end("stop")
        drained = services <= reported
        if drained or waited >= grace:
            self._end_stopped(drained)

    def _end_stopped(self, drained: bool) -> None:
        sig = self.stop_signal
        assert sig is not None
        missing = sorted(set(self.ctx.roles.clients) - set(self.done) - self.stop_acks)
        # noted_ns: when the visor saw the signal (or a client's report of it); every event logged before it
        # was logged before its client got STOP, so a drained run holds it
        reason = {
            "signal": stop.name(sig),
            "drained": drained,
            "clients_silent": missing,
            "noted_ns": self.stop_noted_ns,
        }
        self._write_manifest("stopped", reason=reason)
        s = self.summary or {}
        if drained and not missing:
            what = f"{s.get('events_stored', 0):,} events stored, every one logged before the signal among them"
        else:
            what = (
                f"the drain did not finish within service.stop_grace_s={self.ctx.cfg.service.stop_grace_s:g} s "
                f"(clients that did not answer: {missing or 'none'}; keepers or graphers still writing: "
                f"{not drained}); run chronompi fsck {os.path.abspath(self.root)}"
            )
        sys.stderr.write(f"chronompi: stopped by {stop.name(sig)}: {what}; run {s.get('run')} in {s.get('store')}\n")
        sys.stderr.flush()
        self.comm.Abort(128 + sig)

    def _heartbeat(self) -> None:
        """Rewrite the run record now and then: fsck tells a live run from a crashed one by its age."""
        now = time.monotonic()
        if now - self.beat >= HEARTBEAT_S:
            self.beat = now
            self._save({**self.record, "alive": time.time_ns()})

    def step(self) -> bool:
        self._heartbeat()
        progressed = self._clock()
        progressed |= self._requests()
        progressed |= self._control()
        self._check_failure()
        self._check_hang()
        self.elastic.step()
        reported = set(self.done) | set(self.elastic.drained)
        services = self.elastic.alive()
        if self.storage_failed is not None and (
            services <= reported or time.monotonic() - self.storage_failed_at > self.ctx.cfg.service.failure_grace_s
        ):
            self._end_failed()
        self._check_stop(services, reported)
        if self.forced and services <= reported:
            if self.hang is not None:
                self._write_manifest("aborted", reason={"hang": self.hang})
                self._print_summary()
                log.critical("aborting the job: client rank %d hangs (see above)", self.hang["rank"])
            else:
                self._write_manifest("aborted")
                self._print_summary()
                log.critical("aborting the job: client(s) failed and others did not finish")
            self.comm.Abort(1)
        clients_done = set(self.ctx.roles.clients) <= set(self.done)
        if clients_done and not self.sealed:  # no client will come back: keepers may end
            self.sealed = True
            for k in sorted(self.elastic.alive_keepers):
                self.comm.send((SEAL,), dest=k, tag=TAG_CTRL)
        if clients_done and self.elastic.members_now() <= set(self.done) and not self.elastic.busy():
            self.finished = True
        return progressed

    # -- run table ------------------------------------------------------
    def _run_record(self) -> dict[str, Any]:
        ctx = self.ctx
        stage = staging_dir(ctx.cfg.storage, ctx.run_id)
        return {
            "run": f"{ctx.run_id:016x}",
            "status": "running",
            "start": int(self.t_start * 1e9),  # so that the record's end - start is the summary's wall time
            "end": None,
            "version": __version__,
            "ranks": len(ctx.roles.role),
            "hosts": sorted(set(ctx.hosts)),
            "graphers": [  # (spares may serve as graphers: where their open segments would be)
                {"index": ctx.roles.grapher_index(r), "rank": r, "host": ctx.hosts[r], "staging": str(stage)}
                for r in ctx.roles.graphers + ctx.roles.spares
            ],
            "config": dataclasses.asdict(ctx.cfg),
            "nodes": placement(ctx.hosts, ctx.roles.role),  # which ranks ran where: a lost node is named by it
        }

    # -- end of run ------------------------------------------------------
    def summary_dict(self) -> dict[str, Any]:
        roles: dict[str, list[dict[str, Any]]] = {}
        for rank, (role, stats) in sorted(self.done.items()):
            roles.setdefault(role, []).append({"rank": rank, **stats})
        for r in self.elastic.retired_stats:  # members that left during the run: their part counts too
            roles.setdefault(r["role"], []).append(dict(r))
        clients = roles.get("client", [])
        graphers = roles.get("grapher", [])
        end = time.time_ns()  # every event stored, every file closed: wall time ends (report.py)
        wall = end / 1e9 - self.t_start
        events = sum(g["events"] for g in graphers)
        logged = sum(c["events"] for c in clients)
        first = min((c["first_time"] for c in clients if c.get("first_time")), default=None)
        last = max((c["last_time"] for c in clients if c.get("last_time")), default=None)
        return {
            "run": f"{self.ctx.run_id:016x}",
            "version": __version__,
            "store": os.path.abspath(self.root),
            "ranks": len(self.ctx.roles.role),
            "hosts": sorted(set(self.ctx.hosts)),
            "start": int(self.t_start * 1e9),
            "end": end,
            "wall_s": round(wall, 3),
            "visor_max_rss_mib": max_rss_mib(),
            "clock_pings": self.n_pings,  # answered: clock_pings per node without the visor, then re-estimates
            "process_s": process_age_s(),  # (report.py: what wall time leaves out)
            "events_logged": logged,
            "events_stored": events,
            "bytes_stored": sum(g["bytes"] for g in graphers),
            "dropped": sum(c.get("dropped", 0) for c in clients),
            "rate_events_s": round(events / wall, 1) if wall > 0 else 0.0,
            "first_time": first,
            "last_time": last,
            "failures": [{"rank": r, "host": h, "error": t} for r, h, t in self.failures],
            "events_lost": sum(g.get("events_lost", 0) for g in graphers),
            "unmoved": [p for g in graphers for p in g.get("unmoved", [])],
            "clock": {
                str(c["rank"]): {
                    "offset_ns": c["offset_ns"],
                    "error_ns": c["error_ns"],
                    "syncs": c.get("clock_syncs", 1),
                    "offset_min_ns": c.get("offset_min_ns"),
                    "offset_max_ns": c.get("offset_max_ns"),
                }
                for c in clients
            },
            "roles": roles,
            "registry": self.registry.to_json(),
            "epochs": self._epochs_with_counts(graphers, first, last),
        }

    def _epochs_with_counts(
        self, graphers: list[dict[str, Any]], first: int | None, last: int | None
    ) -> list[dict[str, Any]]:
        """The membership history, each epoch with the events of its windows and their rate."""
        counts: dict[int, int] = {}
        for g in graphers:
            for e, n in g.get("events_by_epoch", {}).items():
                counts[int(e)] = counts.get(int(e), 0) + n
        out = []
        history = self.elastic.history
        for i, e in enumerate(history):
            begin = e.get("start") or first
            end = history[i + 1]["start"] if i + 1 < len(history) else last
            span = (end - begin) / 1e9 if begin and end and end > begin else None
            n = counts.get(e["epoch"], 0)
            out.append({**e, "events": n, "events_per_s": round(n / span, 1) if span else None})
        return out

    def _write_manifest(self, status: str = "complete", **extra: Any) -> None:
        self.summary = self.summary_dict()
        self._save({**self.record, **self.summary, **extra, "status": status})

    def _print_summary(self) -> None:
        from .config import summary_mode

        mode = summary_mode(self.ctx.cfg.service.summary)
        if self.summary is None or mode == "none":
            return
        from .report import print_summary, print_summary_line

        (print_summary if mode == "table" else print_summary_line)(self.summary)

    def run(self) -> str:
        while not self.finished:
            self.backoff.step(self.step())
        self._write_manifest()
        brief = {k: v for k, v in (self.summary or {}).items() if k not in ("roles", "clock", "registry")}
        # clients, members, spares: released before the summary is printed (the table imports rich), and all
        # at once: each rank released goes on to MPI_Finalize and polls there, so blocking sends one after
        # another ran ever slower (1.4 s for 74 ranks on 2 cores)
        MPI.Request.waitall([self.comm.isend((RELEASE, brief), dest=r, tag=TAG_CTRL) for r in self.everyone])
        self._print_summary()
        return "released"
