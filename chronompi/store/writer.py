"""A grapher's segment writer: appends merged window runs to its own HDF5 file.

Each grapher writes only its own files, so graphers never wait on each
other and no parallel HDF5 is needed.

Tiers: the open segment lives in the *staging* directory (warm tier,
node-local by default) as ``NAME.h5.part``; when it closes (size, age, or a
new story, see below) it is moved into the store (cold tier) as ``NAME.h5``:
a rename on the same file system, else copy, fsync, rename, fsync of the
directory, then the staged file is removed. A store therefore holds only
whole segments, and a segment is in the store or not, never half.

Crash consistency: segments are written in HDF5 SWMR mode. A SWMR writer
keeps the file readable by a SWMR reader at every moment, also after a
``kill -9``. For every append, data rows and payload bytes are flushed before
the index rows that cover them, so what the windows index lists is complete.
SWMR allows no new datasets once it is on: a story new to the open segment
closes it and opens the next one with datasets for every story so far.

Storage faults (see ``space.py`` and docs/architecture.md, "Storage faults"): an
append or a new segment that would not fit in the free space raises
:class:`StorageFull` before HDF5 sees it. A full staging directory first rolls the
segment early (moving it out frees staging), then opens the next segment in the
store's directory. A move the store has no room for keeps the closed ``.part`` in
staging (``stranded``) and is retried by :meth:`SegmentWriter.retry_moves`. An error
from inside HDF5 abandons the open segment where it is (``abandoned``: fsck recovers
its committed windows) and is raised as OSError; nothing the index lists is lost.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from .._faults import fault_point
from ..codec import EVENT, rows
from ..config import StorageConfig
from ..errors import StorageFull
from .dirs import SCHEMA_VERSION, SEGMENTS, staging_dir
from .format import WINDOW, WINDOW_V1, discard, fsync_dir, start_writeback
from .integrity import data_sum, row_sum
from .space import chunk_growth, ensure_free, free_bytes

log = logging.getLogger(__name__)

WINDOW_CHUNK = 256  # rows of a segment's windows index per HDF5 chunk
# with storage.fsync on, the disk is asked to start writing a segment each time this many bytes were added
WRITE_BEHIND_BYTES = 8 << 20
CHECKSUMS = ("xxh3", "both", "fletcher32", "none")  # what SegmentWriter(checksums=...) writes (see __init__)


@dataclass
class Run:
    """One sorted run of one window, ready to write.

    ``heap`` is the payload bytes as one uint8 array or as a list of them (the chunks a
    grapher received, in arrival order): each is written where it lies, back to back,
    and the events' offsets index that concatenation. The payloads need not be in event
    order: a reader takes a run's byte span from its offsets (min to max)."""

    window: int
    events: np.ndarray  # EVENT in total order, offsets relative to the heap parts laid end to end
    heap: np.ndarray | list[np.ndarray]  # uint8
    late: bool = False

    @property
    def parts(self) -> list[np.ndarray]:
        return self.heap if isinstance(self.heap, list) else [self.heap]

    @property
    def nbytes(self) -> int:
        return sum(h.nbytes for h in self.parts)


def move_into_store(src: Path, dst: Path) -> None:
    """Move a closed segment into the store atomically: rename, or copy + fsync + rename.

    A store without room for the copy raises :class:`StorageFull` before copying; any
    failure of the copy removes the partial ``NAME.h5.tmp-<pid>`` and leaves ``src`` as it was.
    """
    try:
        os.replace(src, dst)
    except OSError:  # another file system: copy beside the target, make it durable, rename
        ensure_free(dst.parent, src.stat().st_size, f"moving {src.name} into the store")
        tmp = dst.with_name(dst.name + f".tmp-{os.getpid()}")
        try:
            with open(src, "rb") as fin, open(tmp, "wb") as fout:
                shutil.copyfileobj(fin, fout, 8 << 20)
                fout.flush()
                os.fsync(fout.fileno())
            fault_point("move")  # copied, not yet renamed: the store must not show it
            os.replace(tmp, dst)
        except BaseException:
            discard(tmp)
            raise
        src.unlink()
    fsync_dir(dst.parent)


class SegmentWriter:
    """Writes one grapher's segments.

    ``checksums`` (for measurements and for tests of old stores; keep the default): ``xxh3`` writes
    schema 2 (XXH3-64 hashes per run and per index row), ``both`` adds HDF5's Fletcher32 filter on
    every chunk (the library checks each chunk it reads; +30 % replay time, perf/results/checksum.jsonl),
    ``fletcher32`` only the filter with a schema-1 index, ``none`` a schema-1 segment as chronompi
    wrote before checksums."""

    def __init__(
        self, root: str | os.PathLike[str], run_id: int, grapher: int, cfg: StorageConfig, checksums: str = "xxh3"
    ) -> None:
        if checksums not in CHECKSUMS:
            raise ValueError(f"checksums={checksums!r}: use one of {', '.join(CHECKSUMS)}")
        self.fletcher32 = checksums in ("both", "fletcher32")
        self.sums = checksums in ("both", "xxh3")
        self.index_dtype = WINDOW if self.sums else WINDOW_V1
        self.root = Path(root)
        self.store_dir = self.root / SEGMENTS
        self.stage = staging_dir(cfg, run_id)
        self.run_id = run_id
        self.grapher = grapher
        self.cfg = cfg
        self.n_segment = 0
        self.file: h5py.File | None = None
        self.part: Path | None = None
        self.name = ""
        self.opened_at = 0.0
        self.bytes_in_segment = 0
        self.stories: list[tuple[str, str]] = []  # every story this grapher has written
        self.closed_paths: list[Path] = []
        self.events_written = 0
        self.bytes_written = 0
        self.windows_written = 0
        self.write_seconds = 0.0
        self.move_seconds = 0.0
        self.dirty = False  # written since the last fsync
        self.behind_at = 0  # bytes_in_segment when the disk was last asked to start writing (write-behind)
        self.writebacks = 0
        self.fsyncs = 0
        self.fsync_seconds = 0.0
        self.stranded: list[Path] = []  # closed parts left in staging: the store had no room (retry_moves)
        self.abandoned: list[Path] = []  # parts an HDF5 error left behind where they are (fsck recovers them)
        self.move_error: OSError | None = None  # why the last move failed, while anything is stranded
        self._dead: list[h5py.File] = []  # abandoned files, kept referenced: closing them again may crash HDF5
        self.fallbacks = 0  # segments opened in the store's directory because staging was full
        self.troubles: list[OSError] = []  # see take_troubles()

    # -- segments ---------------------------------------------------------
    def _open(self, need: int) -> h5py.File:
        if self.n_segment:
            fault_point("roll")  # the previous segment is in the store, the next not yet open
        self.name = f"r{self.run_id:016x}-g{self.grapher:04d}-{self.n_segment:04d}.h5"
        where = self._room_for(need + 4096 * (1 + 3 * len(self.stories)))  # + headers of every dataset
        part = where / (self.name + ".part")
        try:
            f = h5py.File(part, "w", libver=("v110", "v110"))  # SWMR; h5dump 1.10 reads it
        except (OSError, RuntimeError) as exc:
            raise exc if isinstance(exc, OSError) else OSError(_errno_of(exc), str(exc), str(part)) from exc
        self.file, self.part = f, part
        try:
            f.attrs["schema"] = SCHEMA_VERSION if self.sums else 1
            f.attrs["run"] = np.uint64(self.run_id)
            f.attrs["grapher"] = self.grapher
            f.attrs["segment"] = self.n_segment
            f.attrs["created"] = time.time_ns()
            for chronicle, story in self.stories:  # SWMR: every dataset exists before it starts
                self._create(f, chronicle, story)
            f.swmr_mode = True
        except (OSError, RuntimeError) as exc:
            raise self._abandon(exc, "creating") from exc
        self.opened_at = time.monotonic()
        self.bytes_in_segment = self.behind_at = 0
        log.info("grapher %d opened segment %s", self.grapher, self.part)
        return f

    def _room_for(self, need: int) -> Path:
        """The staging directory if ``need`` bytes fit there, else the store's (a fallback), else StorageFull."""
        self.stage.mkdir(parents=True, exist_ok=True)
        try:
            ensure_free(self.stage, need, "a new segment")
            return self.stage
        except StorageFull:
            if self.stage == self.store_dir:
                raise
            ensure_free(self.store_dir, need, "a new segment (staging is full)")  # raises when both are full
        self.fallbacks += 1
        log.warning(
            "grapher %d: staging %s has %d bytes free: segment %s opens in the store instead",
            self.grapher,
            self.stage,
            free_bytes(self.stage),
            self.name,
        )
        return self.store_dir

    def _create(self, f: h5py.File, chronicle: str, story: str) -> None:
        g = f.require_group(chronicle).create_group(story)
        fl = self.fletcher32  # HDF5 checks each chunk's Fletcher32 sum on every read
        g.create_dataset(
            "events", shape=(0,), maxshape=(None,), dtype=EVENT, chunks=(self.cfg.events_chunk_rows,), fletcher32=fl
        )
        g.create_dataset(
            "payload",
            shape=(0,),
            maxshape=(None,),
            dtype=np.uint8,
            chunks=(self.cfg.payload_chunk_bytes,),
            fletcher32=fl,
        )
        g.create_dataset(
            "windows", shape=(0,), maxshape=(None,), dtype=self.index_dtype, chunks=(WINDOW_CHUNK,), fletcher32=fl
        )

    def _write_behind(self) -> None:
        """Have the disk start on what the segment holds (storage.fsync on): the fsync that closes it, on
        the way to every client's release, then waits for the last few MiB only, not the whole segment."""
        self.behind_at = self.bytes_in_segment
        if self.file is not None and start_writeback(self.file.id.get_vfd_handle()):
            self.writebacks += 1

    def fsync(self) -> None:
        """Make what the open segment holds durable on its disk (``storage.fsync`` decides when)."""
        if self.file is None or not self.dirty or self.cfg.fsync == "never":
            return
        t0 = time.perf_counter()
        os.fsync(self.file.id.get_vfd_handle())
        self.dirty = False
        self.fsyncs += 1
        self.fsync_seconds += time.perf_counter() - t0

    def _close_segment(self) -> None:
        """Close the open segment and move it into the store. Never raises: a segment that cannot be
        closed is abandoned where it is, one the store has no room for is stranded in staging."""
        if self.file is None or self.part is None:
            return
        try:
            self.fsync()  # a segment enters the store durable (the copy path fsyncs its copy too)
            self.file.close()
        except (OSError, RuntimeError) as exc:  # h5py reports a failed flush as RuntimeError
            self.troubles.append(self._abandon(exc, "closing"))
            return
        part, self.part, self.file = self.part, None, None
        self.n_segment += 1
        self._move(part)

    def _move(self, part: Path) -> bool:
        t0 = time.perf_counter()
        dst = self.store_dir / part.name[: -len(".part")]
        try:
            move_into_store(part, dst)
        except OSError as exc:
            if part not in self.stranded:
                self.stranded.append(part)
                self.closed_paths.append(part)  # readable where it is (a closed HDF5 file)
                log.warning("grapher %d: %s stays in staging: %s", self.grapher, part, exc)
            self.move_error = exc
            return False
        finally:
            self.move_seconds += time.perf_counter() - t0
        if part in self.stranded:
            self.stranded.remove(part)
            self.closed_paths[self.closed_paths.index(part)] = dst
        else:
            self.closed_paths.append(dst)
        log.info("grapher %d closed segment %s", self.grapher, dst.name)
        return True

    def retry_moves(self) -> bool:
        """Try again to move the stranded segments into the store; True when none is left."""
        for part in list(self.stranded):
            if not self._move(part):
                return False
        self.move_error = None
        return True

    def _abandon(self, exc: BaseException, doing: str) -> OSError:
        """Give up the open segment after an error inside HDF5; returns the error as an OSError.

        The ``.part`` stays where it is: SWMR kept it readable up to its last flush, so fsck
        recovers every window its index lists. The file object is kept referenced, never
        closed again (HDF5 may crash closing a file whose flush failed).
        """
        part = self.part
        self._dead.append(self.file)
        self.file, self.part = None, None
        self.n_segment += 1
        if part is not None:
            self.abandoned.append(part)
        err = exc if isinstance(exc, OSError) else OSError(_errno_of(exc), f"HDF5 failed {doing}: {exc}", str(part))
        log.error("grapher %d: abandoned segment %s after an error %s it: %s", self.grapher, part, doing, exc)
        return err

    def take_troubles(self) -> list[OSError]:
        """Errors that abandoned a segment since the last call without failing the call that met them.

        (A failed move is not one: see :attr:`stranded` and :attr:`move_error`.)
        """
        out, self.troubles = self.troubles, []
        return out

    def unmoved(self) -> list[Path]:
        """Segments that hold committed data outside the store (``chronompi fsck`` moves them)."""
        return self.stranded + self.abandoned

    def close(self) -> None:
        """Close the open segment and move it into the store; safe to call twice, never raises
        (see :meth:`unmoved` and :meth:`take_troubles` for what did not go there)."""
        self._close_segment()
        if self.stage != self.store_dir and not self.stranded:
            try:
                self.stage.rmdir()
            except OSError:
                pass

    def roll_if_old(self) -> bool:
        """Close the open segment if it is older than ``segment_age_s`` (called when idle too)."""
        if self.file is not None and time.monotonic() - self.opened_at >= self.cfg.segment_age_s:
            self._close_segment()
            return True
        return False

    def open_paths(self) -> list[Path]:
        """Files holding what this writer committed: closed segments and the open one."""
        return self.closed_paths + ([self.part] if self.part is not None else [])

    # -- appends ----------------------------------------------------------
    def append(self, chronicle: str, story: str, runs: Sequence[Run]) -> None:
        """Append the runs of one story (see :meth:`append_all`)."""
        self.append_all([(chronicle, story, runs)])

    def append_all(self, items: Sequence[tuple[str, str, Sequence[Run]]]) -> None:
        """Append runs of several stories: all data, one flush, then all their index rows, one flush.

        Two file flushes per commit whatever the number of stories (SWMR flushes are
        the grapher's main cost on small windows).
        """
        items = [(c, s, runs) for c, s, runs in items if runs]
        if not items:
            return
        t0 = time.perf_counter()
        new = [(c, s) for c, s, _ in items if (c, s) not in self.stories]
        if new:
            self.stories.extend(dict.fromkeys(new))
            self._close_segment()  # SWMR cannot add datasets: the next segment has them all
        if self.file is not None and self.part is not None:
            try:
                ensure_free(self.part.parent, self._growth(self.file, items), "an append")
            except StorageFull:
                if self.bytes_in_segment:
                    self._close_segment()  # roll early: moving it out of staging makes room there
                else:
                    self._discard_empty()
        f = self.file if self.file is not None else self._open(self._growth(None, items))
        assert self.part is not None
        ensure_free(self.part.parent, self._growth(f, items), "an append")  # nothing reached HDF5 yet
        try:
            n_rows, n_bytes, n_runs = self._write(f, items)
        except (OSError, RuntimeError) as exc:  # inside HDF5: the windows stay the caller's to retry
            raise self._abandon(exc, "writing") from exc
        self.events_written += n_rows
        self.bytes_written += n_bytes
        self.windows_written += n_runs
        self.bytes_in_segment += n_bytes + n_rows * EVENT.itemsize
        if self.bytes_in_segment - self.behind_at >= WRITE_BEHIND_BYTES and self.cfg.fsync != "never":
            self._write_behind()
        self.write_seconds += time.perf_counter() - t0
        if self.bytes_in_segment >= self.cfg.segment_bytes:
            self._close_segment()
        else:
            self.roll_if_old()

    def _growth(self, f: h5py.File | None, items: Sequence[tuple[str, str, Sequence[Run]]]) -> int:
        """Bytes appending ``items`` adds to segment ``f`` (None: a new one): whole new chunks (space.py)."""
        cfg, need = self.cfg, 0
        for chronicle, story, runs in items:
            r0 = b0 = w0 = 0
            if f is not None:
                g = f[chronicle][story]
                r0, b0, w0 = g["events"].shape[0], g["payload"].shape[0], g["windows"].shape[0]
            n_rows = sum(len(r.events) for r in runs)
            n_bytes = sum(r.nbytes for r in runs)
            need += chunk_growth(r0, r0 + n_rows, cfg.events_chunk_rows, EVENT.itemsize)
            need += chunk_growth(b0, b0 + n_bytes, cfg.payload_chunk_bytes, 1)
            need += chunk_growth(w0, w0 + len(runs), WINDOW_CHUNK, WINDOW.itemsize)
        return need

    def _discard_empty(self) -> None:
        """Drop an open segment that holds nothing (its name is reused by the next one)."""
        assert self.file is not None and self.part is not None
        try:
            self.file.close()
            self.part.unlink()
        except (OSError, RuntimeError) as exc:
            self.troubles.append(self._abandon(exc, "discarding an empty segment"))
            return
        self.file, self.part = None, None

    def _write(self, f: h5py.File, items: Sequence[tuple[str, str, Sequence[Run]]]) -> tuple[int, int, int]:
        """The HDF5 part of an append: data, flush, index rows, flush. Returns (rows, payload bytes, runs)."""
        pending = []
        total_rows = total_bytes = total_runs = 0
        for chronicle, story, runs in items:
            g = f[chronicle][story]
            ev_ds, pl_ds = g["events"], g["payload"]
            n_rows = sum(len(r.events) for r in runs)
            n_bytes = sum(r.nbytes for r in runs)
            row0 = ev_ds.shape[0]
            byte0 = pl_ds.shape[0]
            events = np.empty(n_rows, EVENT)
            index = np.zeros(len(runs), self.index_dtype)
            row, off = 0, byte0
            for i, r in enumerate(runs):
                n = len(r.events)
                part = events[row : row + n]
                rows(part)[...] = rows(r.events)
                part["offset"] += off
                fields = {"window": r.window, "first_row": row0 + row, "n_rows": n, "late": r.late}
                fields.update(t_min=r.events["time"][0], t_max=r.events["time"][-1])
                if self.sums:  # the hash of what is written: rows with their absolute offsets, heap parts in order
                    fields.update(heap0=off, heap_bytes=r.nbytes, checksum=data_sum(part, r.parts))
                for name, value in fields.items():
                    index[name][i] = value
                row += n
                off += r.nbytes
            ev_ds.resize((row0 + n_rows,))
            ev_ds[row0:] = events
            if n_bytes:
                pl_ds.resize((byte0 + n_bytes,))
                pos = byte0
                for r in runs:  # each heap part straight from where it lies (joining them would copy)
                    for h in r.parts:
                        if h.nbytes:
                            pl_ds[pos : pos + h.nbytes] = h
                            pos += h.nbytes
            pending.append((g["windows"], index))
            total_rows += n_rows
            total_bytes += n_bytes
            total_runs += len(runs)
        f.flush()  # the data is on its way before the index that points at it
        if self.cfg.fsync == "always":  # ... and on the disk, so a power loss cannot keep the index alone
            self.dirty = True
            self.fsync()
        fault_point("commit")  # rows written, index not yet: a reader must not see these rows
        now = time.time_ns()
        for wi_ds, index in pending:
            index["committed"] = now
            if self.sums:
                for i in range(len(index)):
                    index["row_checksum"][i] = row_sum(index[i : i + 1])
            w0 = wi_ds.shape[0]
            wi_ds.resize((w0 + len(index),))
            wi_ds[w0:] = index
        f.flush()
        self.dirty = True
        if self.cfg.fsync == "always":
            self.fsync()
        return total_rows, total_bytes, total_runs


def _errno_of(exc: BaseException) -> int:
    """The errno an HDF5 error message carries ("errno = 28"), else EIO."""
    m = re.search(r"errno = (\d+)", str(exc))
    return int(m.group(1)) if m else errno.EIO
