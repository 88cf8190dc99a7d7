"""Configuration schema: dataclasses that Hydra's ConfigStore knows.

Every field has a working default, so an installed package runs with no
``conf/`` directory at all. YAML groups in ``conf/`` (``layout/``,
``storage/``, ``workload/``, ``experiment/``) extend these schemas.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import field
from pathlib import Path
from typing import Any

from ._plain import plain
from .errors import ConfigError


@plain
class LayoutConfig:
    """Which ranks serve which role (``chronompi.layout`` holds the rule).

    Rank 0 is the visor. 0 for ``keepers`` / ``graphers`` and None for ``per_node`` mean "by the rule":
    a keeper per node once there is more than one node, keepers and graphers growing with the clients
    (one keeper per 8 clients, one grapher per 32). A value given always wins. With ``per_node`` false
    the next ``keepers`` ranks are keepers and the next ``graphers`` ranks graphers; with ``per_node``
    true every node gets ``keepers`` keepers (its lowest ranks) and the ``graphers`` graphers are spread
    over the nodes round-robin.
    """

    keepers: int = 0  # 0: by the rule; per node when per_node
    graphers: int = 0  # 0: by the rule
    per_node: bool | None = None  # None: true when keepers are by the rule and the job spans nodes
    spares: int = 0  # idle ranks the visor can make keepers or graphers while the job runs (elasticity)
    clients: int = 0  # > 0: exactly this many clients, extra ranks become spares; 0: every rank left


@plain
class ClientConfig:
    batch_bytes: int = 256 * 1024  # a batch is sent when it would grow past this
    batch_ms: float = 50.0  # ... or when its oldest event is this old; also the heartbeat period
    max_inflight: int = 4  # batches in flight per client before backpressure
    max_event_bytes: int = 256 * 1024  # largest accepted payload
    policy: str = "block"  # block | drop: what a client does when max_inflight are pending
    clock_pings: int = 8  # ping-pongs to the visor for the clock offset
    clock_resync_s: float = 60.0  # re-estimate the offset this often (0: only at start-up)


@plain
class KeeperConfig:
    ring_slots: int = 32  # pre-posted receive slots, each batch_bytes + max_event_bytes
    window_ms: float = 100.0  # width of a time window
    acceptance_ms: float = 2000.0  # longest a silent client may hold a window open


@plain
class StorageConfig:
    root: str = "chronompi-store"  # the store directory (cold tier)
    # warm tier (open segments): local = $SLURM_TMPDIR, $TMPDIR or /tmp; none = in the store; a path; auto = local
    # on one node, none on several (a synced event must outlive the loss of any one node)
    staging: str = "auto"
    segment_bytes: int = 1 << 30  # roll a grapher's segment past this size
    segment_age_s: float = 600.0  # ... or when it is this old
    events_chunk_rows: int = 16384  # HDF5 chunk of the events table
    payload_chunk_bytes: int = 1 << 20  # HDF5 chunk of the payload heap
    # when a grapher fsyncs its files: never (flushed to the OS only: survives kill -9, not a power
    # loss) | sync (before it confirms a client's sync(), and every segment before it enters the
    # store) | always (also after every commit)
    fsync: str = "sync"
    retry_s: float = 30.0  # how long a grapher retries a failed write (disk full, I/O error) before giving up


@plain
class ElasticConfig:
    """Membership changes while the job runs (spare ranks become keepers or graphers and back)."""

    lead_ms: float = 500.0  # a change takes effect at the first window boundary at least this far ahead
    # the visor grows and shrinks the membership by itself (measured backpressure); None: on when there are spares
    auto: bool | None = None
    max_keepers: int = 0  # bounds of the automatic policy (0: layout + spares); scale() is bounded by spares
    max_graphers: int = 0
    min_keepers: int = 1
    min_graphers: int = 1
    grow_after_s: float = 1.0  # grow when clients blocked (or rings stayed full) for this long ...
    shrink_after_s: float = 5.0  # ... shrink when idle for this long
    cooldown_s: float = 3.0  # no automatic change sooner than this after the last one
    period_s: float = 0.5  # clients, keepers and graphers report their load, and the policy runs, this often


@plain
class ServiceConfig:
    progress: str = "backoff"  # backoff | busy
    backoff_min_us: float = 20.0
    backoff_max_ms: float = 2.0
    failure_grace_s: float = 30.0  # after a client fails, how long the others may take to finish
    stop_grace_s: float = 20.0  # after SIGTERM/SIGINT (stop.py): how long the drain may take (Slurm's KillWait: 30 s)
    hang_check_s: float = 10.0  # a client stuck this long in an MPI call that cannot return ends the job; 0: off
    # what the visor prints at the end: line (one line: events, store, run, wall time, rate; the default) | table
    # (the full table; `chronompi run`'s default) | none. true and false, its older values, mean table and none
    summary: str = "line"
    log_level: str = "WARNING"


@plain
class WorkloadConfig:
    """The demo workload of ``chronompi run`` (ChronoLog's admin tool)."""

    chronicles: int = 1  # chronicles per client
    stories: int = 2  # stories per chronicle
    shared: bool = True  # all clients write the same stories (else one set per client)
    events: int = 20000  # events per client
    payload_min: int = 64
    payload_avg: int = 64
    payload_max: int = 64
    rate: float = 0.0  # events/s per client; 0 = as fast as possible
    burst_s: float = 0.0  # > 0: bursts this long at `rate` alternate with ...
    quiet_s: float = 0.0  # ... this long at `quiet_rate` (a bursty load, +experiment=autoscale)
    quiet_rate: float = 100.0
    mode: str = "log"  # log | log_many
    many: int = 1000  # events per log_many call
    threads: int = 1  # threads logging concurrently in each client
    seed: int = 0
    progress: bool = True


@plain
class Config:
    layout: LayoutConfig = field(default_factory=LayoutConfig)
    client: ClientConfig = field(default_factory=ClientConfig)
    keeper: KeeperConfig = field(default_factory=KeeperConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    elastic: ElasticConfig = field(default_factory=ElasticConfig)


# -- building and checking a Config ----------------------------------------------------------------------------------
# Every value is checked where it enters (cfg, $CHRONOMPI_OVERRIDES, the command line of ``chronompi run``), so an
# error names its real source; ``sources`` remembers where each key was set, so the range checks can say it too.

FROM_CFG = "in cfg"
FROM_CLI = "in the overrides on the command line"
ENV_OVERRIDES = "CHRONOMPI_OVERRIDES"

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")
_KIND = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
_LOG_LEVELS = ("CRITICAL", "FATAL", "ERROR", "WARNING", "WARN", "INFO", "DEBUG", "NOTSET")


SUMMARY_MODES = ("line", "table", "none")
_SUMMARY_BOOLS = {"true": "table", "false": "none"}  # service.summary was a bool: true printed the table


def summary_mode(value: Any) -> str | None:
    """``service.summary`` as one of :data:`SUMMARY_MODES` (true -> table, false -> none); None: none of them."""
    text = str(value).strip().lower()
    text = _SUMMARY_BOOLS.get(text, text)
    return text if text in SUMMARY_MODES else None


def as_config(cfg: Any = None, *, source: str = FROM_CFG) -> Config:
    """Turn ``None``, a :class:`Config`, a mapping or an OmegaConf node into a validated Config.

    ``source`` says where a mapping came from, for the error messages (``"in cfg"``).
    """
    return build(cfg, source=source)


def build(
    cfg: Any = None, overrides: Sequence[str] = (), *, source: str = FROM_CFG, env: str = ENV_OVERRIDES
) -> Config:
    """``cfg`` (as for :func:`as_config`) with the ``key=value`` ``overrides`` of the environment variable ``env``
    applied over it, then range-checked. A :class:`Config` given as ``cfg`` is not modified."""
    sources: dict[str, str] = {}
    if cfg is None:
        out = Config()
    elif isinstance(cfg, Config):
        out = copy.deepcopy(cfg) if overrides else cfg
    else:
        out = Config()
        _apply(out, _plain(cfg, source), "", source, sources)
    for item in overrides:
        _override(out, item, f"in {env} entry {item!r}", sources)
    check_values(out, sources)
    if out is not cfg:  # (a Config given as cfg is not modified)
        out.service.summary = summary_mode(out.service.summary) or out.service.summary  # true -> table, ...
    return out


def _plain(cfg: Any, where: str) -> Any:
    """A mapping or OmegaConf node as plain dicts (interpolations resolved)."""
    if "omegaconf" not in sys.modules:  # no OmegaConf node can exist: spare the import (rank 0 holds up start-up)
        return cfg
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if not OmegaConf.is_config(cfg):
        return cfg
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as exc:
        raise explain(exc, where) from None


def _fields(schema: type) -> dict[str, Any]:
    return typing.get_type_hints(schema)


def _unknown(key: str, schema: type, where: str) -> ConfigError:
    known = ", ".join(sorted(_fields(schema)))
    return ConfigError(f"{where}: unknown config key {key!r}; known keys here: {known}")


def _apply(obj: Any, data: Any, prefix: str, where: str, sources: dict[str, str]) -> None:
    """Set the values of the mapping ``data`` on the dataclass ``obj`` (a typo must not be silently ignored)."""
    if not isinstance(data, Mapping):
        section = prefix.rstrip(".") or "<root>"
        raise ConfigError(f"{where}: config section {section!r} must be a mapping, got {data!r}")
    types = _fields(type(obj))
    for name, value in data.items():
        key = prefix + str(name)
        if name not in types:
            raise _unknown(key, type(obj), where)
        if dataclasses.is_dataclass(types[name]):
            _apply(getattr(obj, name), value, key + ".", where, sources)
        else:
            setattr(obj, name, _convert(key, value, types[name], getattr(obj, name), where))
            sources[key] = where


_GROUPS = Path(__file__).resolve().parent / "conf"  # the config groups of chronompi run (hydra)


def _group(key: str, name: str, where: str) -> tuple[str, Any] | None:
    """A config group selected by name, as ``chronompi run`` takes them (``layout=per_node``,
    ``+experiment=low_overhead``): (the section it sets, "" for the whole config; its values). None: no group."""
    group = key.lstrip("+")
    folder = _GROUPS / group
    if not group.isidentifier() or not folder.is_dir():
        return None
    path = folder / f"{name.strip()}.yaml"
    if not name.strip().isidentifier() or not path.is_file():
        names = ", ".join(sorted(p.stem for p in folder.glob("*.yaml")))
        section = _fields(Config).get(group)
        keys = f"; or set its keys, e.g. {group}.{next(iter(_fields(section)))}=..." if section else ""
        raise ConfigError(
            f"{where}: there is no {group} config {name.strip()!r}; the {group} configs are: {names}{keys}"
        )
    from omegaconf import OmegaConf  # (only here: a group asked for by name)

    data = OmegaConf.to_container(OmegaConf.load(path), resolve=True) or {}
    whole = path.read_text().lstrip().startswith("# @package _global_")
    return ("" if whole else group), data


def _override(out: Config, item: str, where: str, sources: dict[str, str]) -> None:
    """Apply one ``section.key=value`` override (the value is text, converted to the key's type), or select a
    config group by name (``layout=per_node``: chronompi/conf/layout/per_node.yaml)."""
    key, eq, value = item.partition("=")
    key = key.strip()
    if not eq or not key:
        raise ConfigError(f"{where}: not a key=value pair; write e.g. storage.root=/scratch/run1")
    chosen = _group(key, value, where) if "." not in key else None
    if chosen is not None:
        section, data = chosen
        _apply(getattr(out, section) if section else out, data, f"{section}." if section else "", where, sources)
        return
    obj: Any = out
    parts = key.split(".")
    for i, part in enumerate(parts):
        here = ".".join(parts[: i + 1])
        types = _fields(type(obj))
        if part not in types:
            raise _unknown(here, type(obj), where)
        last = i == len(parts) - 1
        if dataclasses.is_dataclass(types[part]):
            if last:
                first = next(iter(_fields(types[part])))
                raise ConfigError(
                    f"{where}: {key!r} is a config section, not a value; set its keys, e.g. {key}.{first}=..."
                )
            obj = getattr(obj, part)
        elif not last:
            raise ConfigError(f"{where}: {here!r} is a value, not a config section; write {here}=VALUE")
        else:
            setattr(obj, part, _convert(key, value, types[part], getattr(obj, part), where))
            sources[key] = where


_UNSET = ("null", "none", "auto", "~", "")  # text for None in an optional key (``bool | None``: unset = automatic)


def _optional_of(typ: Any) -> Any:
    """``X`` for an optional key's type ``X | None``, else None."""
    args = typing.get_args(typ)
    if type(None) in args and len(args) == 2:
        return next(a for a in args if a is not type(None))
    return None


def _kind(typ: Any) -> str:
    inner = _optional_of(typ)
    if inner is not None:
        return f"{_KIND.get(inner, 'valid')} or null (automatic)"
    return _KIND.get(typ, "valid")


def _convert(key: str, value: Any, typ: Any, default: Any, where: str) -> Any:
    """``value`` as ``typ`` (int, float, bool or str, or one of them or None), from text too; anything else is
    a ConfigError."""
    inner = _optional_of(typ)
    if inner is not None:
        if value is None or (isinstance(value, str) and value.strip().lower() in _UNSET):
            return None
        try:
            return _convert(key, value, inner, default, where)
        except ConfigError:
            raise ConfigError(
                f"{where}: {key}={value!r} is not {_kind(typ)}; give one like {key}=true, or {key}=null"
            ) from None
    text = value.strip() if isinstance(value, str) else None
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            if text is not None and text.lower() in _TRUE + _FALSE:
                return text.lower() in _TRUE
        elif typ is int:
            if number and float(value).is_integer():
                return int(value)
            if text is not None:
                return int(text)
        elif typ is float:
            if number:
                return float(value)
            if text is not None:
                return float(text)
        elif typ is str:
            if isinstance(value, str):
                return value
            if isinstance(value, bool) and key == "service.summary":  # its older, boolean form
                return _show(value)
            if number:
                return str(value)
    except ValueError:
        pass
    raise ConfigError(f"{where}: {key}={value!r} is not {_KIND[typ]}; give one like {key}={_show(default)}")


def _show(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else "null" if value is None else str(value)


def _section(dotted: str) -> type | None:
    """The dataclass of the config section ``dotted`` ("" is the root), or None when there is none."""
    schema: type = Config
    for part in dotted.split(".") if dotted else ():
        sub = _fields(schema).get(part)
        if not (isinstance(sub, type) and dataclasses.is_dataclass(sub)):
            return None
        schema = sub
    return schema


def explain(exc: BaseException, where: str) -> ConfigError:
    """An OmegaConf (or Hydra) error as a ConfigError in our words: its internals (``full_key:``, ``object_type=``)
    never reach the user."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    seen: BaseException | None = exc
    while seen is not None:
        key = getattr(seen, "full_key", None) if isinstance(seen, OmegaConfBaseException) else None
        if key:
            parent, _, name = str(key).rpartition(".")
            schema = _section(parent)
            if schema is None:
                break
            types = _fields(schema)
            if isinstance(seen, (ConfigAttributeError, ConfigKeyError)) or name not in types:
                return _unknown(str(key), schema, where)
            value, default = getattr(seen, "value", None), getattr(schema(), name)
            kind = _kind(types[name])
            return ConfigError(f"{where}: {key}={value!r} is not {kind}; give one like {key}={_show(default)}")
        seen = seen.__cause__ or seen.__context__
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return ConfigError(f"{where}: {first}")


# -- range checks ----------------------------------------------------------------------------------------------------


def _at_least(low: float) -> Callable[[Any], bool]:
    return lambda v: v >= low


def _above(low: float) -> Callable[[Any], bool]:
    return lambda v: v > low


def _one_of(*choices: str) -> Callable[[Any], bool]:
    return lambda v: v in choices


# key -> (test, what the value must be); ``not test(v)`` also refuses NaN
_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "layout.keepers": (_at_least(0), ">= 1, or 0 for the default rule"),
    "layout.graphers": (_at_least(0), ">= 1, or 0 for the default rule"),
    "layout.spares": (_at_least(0), ">= 0"),
    "layout.clients": (_at_least(0), ">= 0 (0: every rank the services leave)"),
    "elastic.lead_ms": (_above(0), "> 0"),
    "elastic.max_keepers": (_at_least(0), ">= 0 (0: layout.keepers + layout.spares)"),
    "elastic.max_graphers": (_at_least(0), ">= 0 (0: layout.graphers + layout.spares)"),
    "elastic.min_keepers": (_at_least(1), ">= 1"),
    "elastic.min_graphers": (_at_least(1), ">= 1"),
    "elastic.grow_after_s": (_above(0), "> 0"),
    "elastic.shrink_after_s": (_above(0), "> 0"),
    "elastic.cooldown_s": (_at_least(0), ">= 0"),
    "elastic.period_s": (_above(0), "> 0"),
    "client.batch_bytes": (_above(0), "> 0"),
    "client.batch_ms": (_above(0), "> 0"),
    "client.max_inflight": (_at_least(1), ">= 1"),
    "client.max_event_bytes": (_at_least(0), ">= 0"),
    "client.policy": (_one_of("block", "drop"), "'block' or 'drop'"),
    "client.clock_pings": (_at_least(1), ">= 1"),
    "client.clock_resync_s": (_at_least(0), ">= 0 (0: never)"),
    "keeper.ring_slots": (_at_least(1), ">= 1"),
    "keeper.window_ms": (_above(0), "> 0"),
    "keeper.acceptance_ms": (_above(0), "> 0"),
    "storage.root": (bool, "a directory (not empty)"),
    "storage.segment_bytes": (_above(0), "> 0"),
    "storage.segment_age_s": (_above(0), "> 0"),
    "storage.events_chunk_rows": (_above(0), "> 0"),
    "storage.payload_chunk_bytes": (_above(0), "> 0"),
    "storage.fsync": (_one_of("never", "sync", "always"), "'never', 'sync' or 'always'"),
    "storage.retry_s": (_above(0), "> 0"),
    "service.progress": (_one_of("backoff", "busy"), "'backoff' or 'busy'"),
    "service.backoff_min_us": (_at_least(0), ">= 0"),
    "service.backoff_max_ms": (_at_least(0), ">= 0"),
    "service.failure_grace_s": (_at_least(0), ">= 0"),
    "service.stop_grace_s": (_at_least(0), ">= 0"),
    "service.hang_check_s": (_at_least(0), ">= 0"),
    "service.summary": (lambda v: summary_mode(v) is not None, "'line', 'table' or 'none' (true: table, false: none)"),
    "service.log_level": (lambda v: v.upper() in _LOG_LEVELS, "a logging level: DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    "workload.chronicles": (_at_least(1), ">= 1"),
    "workload.stories": (_at_least(1), ">= 1"),
    "workload.events": (_at_least(0), ">= 0"),
    "workload.rate": (_at_least(0), ">= 0 (0: as fast as possible)"),
    "workload.burst_s": (_at_least(0), ">= 0 (0: no bursts)"),
    "workload.quiet_s": (_at_least(0), ">= 0"),
    "workload.quiet_rate": (_above(0), "> 0"),
    "workload.mode": (_one_of("log", "log_many"), "'log' or 'log_many'"),
    "workload.many": (_at_least(1), ">= 1"),
    "workload.threads": (_at_least(1), ">= 1"),
    "workload.seed": (_at_least(0), ">= 0"),
}


def _where(sources: Mapping[str, str], *keys: str) -> str:
    places = list(dict.fromkeys(sources[k] for k in keys if k in sources))
    return "; ".join(places) + ": " if places else ""


def check_values(cfg: Config, sources: Mapping[str, str] | None = None) -> None:
    """Range checks that need no knowledge of the communicator; ``sources`` (key -> where it was set) names
    the origin of a bad value in the message."""
    sources = sources or {}
    for key, (test, allowed) in _RULES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if not test(value):
            raise ConfigError(f"{_where(sources, key)}{key}={value!r} must be {allowed}")
    s = cfg.service
    if s.backoff_min_us > s.backoff_max_ms * 1000:
        raise ConfigError(
            f"{_where(sources, 'service.backoff_min_us', 'service.backoff_max_ms')}service.backoff_min_us="
            f"{s.backoff_min_us!r} must not exceed service.backoff_max_ms={s.backoff_max_ms!r} (x1000: min is in us)"
        )
    w = cfg.workload
    if not 0 <= w.payload_min <= w.payload_avg <= w.payload_max:
        keys = ("workload.payload_min", "workload.payload_avg", "workload.payload_max")
        raise ConfigError(
            f"{_where(sources, *keys)}workload payload sizes must satisfy 0 <= payload_min <= payload_avg <= "
            f"payload_max, got workload.payload_min={w.payload_min} workload.payload_avg={w.payload_avg} "
            f"workload.payload_max={w.payload_max}"
        )


def check_workload(cfg: Config) -> None:
    """What ``chronompi run`` needs beyond :func:`check_values`: every workload event must be loggable."""
    if cfg.workload.payload_max > cfg.client.max_event_bytes:
        raise ConfigError(
            f"workload.payload_max={cfg.workload.payload_max} exceeds client.max_event_bytes="
            f"{cfg.client.max_event_bytes}: such events would be refused; lower the one or raise the other"
        )


def register_configs() -> None:
    """Register the schemas in Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="chronompi_schema", node=Config)
    for group, schema in (
        ("layout", LayoutConfig),
        ("client", ClientConfig),
        ("keeper", KeeperConfig),
        ("storage", StorageConfig),
        ("service", ServiceConfig),
        ("elastic", ElasticConfig),
        ("workload", WorkloadConfig),
    ):
        cs.store(group=group, name=f"{group}_schema", node=schema)


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
