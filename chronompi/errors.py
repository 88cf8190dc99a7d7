"""Exceptions of chronompi.

One root, :class:`ChronoError`; every subclass also inherits the closest
builtin so that ``except ValueError`` keeps working for callers that do not
know chronompi. Messages say what was wrong, with the value, and what to do.
"""

from __future__ import annotations

import errno


class ChronoError(Exception):
    """Root of every error raised by chronompi."""


class ConfigError(ChronoError, ValueError):
    """A configuration or layout value is invalid.

    Raised identically on every rank of a session, before any communication,
    so that all ranks fail together and nothing hangs.
    """


class ScaleError(ConfigError):
    """A membership change (``client.scale``) that cannot be carried out: fewer than one keeper or
    grapher, not enough spare ranks, another change in progress, or the session ending. Nothing changed."""


class InvalidName(ChronoError, ValueError):
    """A chronicle or story name is not allowed (it would become a path)."""

    def __init__(self, kind: str, name: object, why: str) -> None:
        self.kind = kind
        self.name = name
        self.why = why
        super().__init__(
            f"invalid {kind} name {name!r}: {why}; use 1-64 characters from "
            "A-Z a-z 0-9 _ - . , not starting with '.' or '-'"
        )


class PayloadTooLarge(ChronoError, ValueError):
    """An event payload is larger than ``max_event_bytes``."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"event payload of {size} bytes exceeds max_event_bytes={limit}; "
            "split it, or raise client.max_event_bytes in the config"
        )


class UnknownChronicle(ChronoError, KeyError):
    """The chronicle does not exist in the registry."""

    def __init__(self, name: str, hint: str | None = None) -> None:
        self.name = name
        advice = hint if hint is not None else f"create it first with create_chronicle({name!r})"
        super().__init__(f"no chronicle named {name!r}; {advice}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class UnknownStory(ChronoError, KeyError):
    """The story does not exist (in the registry or in a store)."""

    def __init__(self, chronicle: str, story: str) -> None:
        self.chronicle = chronicle
        self.story = story
        super().__init__(f"no story {story!r} in chronicle {chronicle!r}")

    def __str__(self) -> str:
        return str(self.args[0])


class ChronicleExists(ChronoError, ValueError):
    """create_chronicle() on a name that is already registered."""


class ChronicleInUse(ChronoError, RuntimeError):
    """destroy_chronicle() while some client still holds one of its stories."""


class StoryNotAcquired(ChronoError, RuntimeError):
    """An operation on a story that this client has released (or never acquired)."""


class SessionClosed(ChronoError, RuntimeError):
    """A client or story is used after its session ended."""


class SyncTimeout(ChronoError, TimeoutError):
    """``sync(timeout=...)`` ran out of time before the store confirmed the client's events.

    Nothing is lost by it: the events stay on their way; a later ``sync()`` covers them too.
    """

    def __init__(self, timeout: float, until: str, answered: int, expected: int) -> None:
        self.timeout = timeout
        self.until = until
        self.answered = answered
        self.expected = expected
        super().__init__(
            f"sync(until={until!r}) not confirmed within timeout={timeout} s ({answered} of {expected} answers); "
            "the events are still on their way: call sync() again, or raise the timeout (a commit waits for the "
            "slowest client's window, at most keeper.acceptance_ms)"
        )


class ScaleTimeout(ChronoError, TimeoutError):
    """``scale(timeout=...)`` ran out of time before the membership change was complete.

    The change goes on: ``members()`` shows when it is in place; nothing logged is lost by it.
    """

    def __init__(self, timeout: float, epoch: int, state: dict) -> None:
        self.timeout, self.epoch, self.state = timeout, epoch, state
        super().__init__(
            f"scale() not complete within timeout={timeout} s: epoch {epoch} asked, the membership is at epoch "
            f"{state.get('epoch')}{' (changing)' if state.get('changing') else ''}; it goes on: wait with "
            "members(), or raise the timeout"
        )


class StoreError(ChronoError, OSError):
    """A store directory or file is missing, foreign or damaged."""


class StorageFull(StoreError):
    """A grapher's staging or store file system has too little free space for the next write.

    Raised by the segment writer *before* anything reaches HDF5 (which does not survive a
    full disk). ``errno`` is ENOSPC; ``path`` is the directory, ``needed`` and ``free`` in bytes.
    """

    def __init__(self, path: object, needed: int, free: int, what: str = "write") -> None:
        self.path = str(path)
        self.needed = needed
        self.free = free
        self.what = what
        super().__init__(errno.ENOSPC, f"no space for {what}", self.path)

    def __str__(self) -> str:
        return (
            f"no space left for {self.what} in {self.path}: {self.free:,} bytes free, {self.needed:,} needed; "
            "free some space there (the grapher retries for storage.retry_s) or choose another directory"
        )


class RemoteError(ChronoError, RuntimeError):
    """Another rank failed; the message names that rank and its host."""

    def __init__(self, rank: int, host: str, what: str) -> None:
        self.rank = rank
        self.host = host
        self.what = what
        super().__init__(f"rank {rank} on {host} failed: {what}")


class DamagedSegment(StoreError, UserWarning):
    """A segment file of a store is damaged; ``path`` names it, ``hint`` says what to run.

    Raised by a replay when a story's index or data in a segment is missing,
    unreadable, fails its checksum or holds rows that cannot be data (``chronompi
    fsck STORE`` quarantines the damaged runs and keeps the rest, so skipping a
    whole file would drop events that are sound). Issued as a
    *warning* of this category, and the segment skipped, when a whole file
    cannot be opened, or for any damage when the store was opened with
    ``skip_damaged=True``. ``warnings.warn("...", DamagedSegment)`` works too.
    """

    def __init__(
        self,
        message: str,
        path: object = None,
        hint: str = "",
        story: str | None = None,
        rows: tuple[int, int] | None = None,
    ) -> None:
        self.path = None if path is None else str(path)
        self.hint = hint
        self.story = story  # "chronicle/story", when the damage is in one story
        self.rows = rows  # (first row, number of rows) of the damaged sorted run, when it is one run
        super().__init__(f"{message}; {hint}" if hint else message)
