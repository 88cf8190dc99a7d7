"""Configuration schema: dataclasses that Hydra's ConfigStore knows.

Every field has a working default, so an installed package runs with no
``conf/`` directory at all. YAML groups in ``conf/`` (``layout/``,
``storage/``, ``workload/``, ``experiment/``) extend these schemas.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError


@dataclass
class LayoutConfig:
    """Which ranks serve which role.

    Rank 0 is the visor. With ``per_node`` false the next ``keepers`` ranks
    are keepers and the next ``graphers`` ranks graphers; with ``per_node``
    true every node gets ``keepers`` keepers (its lowest ranks) and the
    ``graphers`` graphers are spread over the nodes round-robin.
    """

    keepers: int = 1
    graphers: int = 1
    per_node: bool = False


@dataclass
class ClientConfig:
    batch_bytes: int = 256 * 1024  # a batch is sent when it would grow past this
    batch_ms: float = 50.0  # ... or when its oldest event is this old; also the heartbeat period
    max_inflight: int = 4  # batches in flight per client before backpressure
    max_event_bytes: int = 256 * 1024  # largest accepted payload
    policy: str = "block"  # block | drop: what a client does when max_inflight are pending
    clock_pings: int = 8  # ping-pongs to the visor for the clock offset
    clock_resync_s: float = 60.0  # re-estimate the offset this often (0: only at start-up)


@dataclass
class KeeperConfig:
    ring_slots: int = 32  # pre-posted receive slots, each batch_bytes + max_event_bytes
    window_ms: float = 100.0  # width of a time window
    acceptance_ms: float = 2000.0  # longest a silent client may hold a window open


@dataclass
class StorageConfig:
    root: str = "chronompi-store"  # the store directory (cold tier)
    staging: str = "auto"  # warm tier (open segments): auto = $SLURM_TMPDIR, $TMPDIR or /tmp; none = in the store
    segment_bytes: int = 1 << 30  # roll a grapher's segment past this size
    segment_age_s: float = 600.0  # ... or when it is this old
    events_chunk_rows: int = 16384  # HDF5 chunk of the events table
    payload_chunk_bytes: int = 1 << 20  # HDF5 chunk of the payload heap
    # when a grapher fsyncs its files: never (flushed to the OS only: survives kill -9, not a power
    # loss) | sync (before it confirms a client's sync(), and every segment before it enters the
    # store) | always (also after every commit)
    fsync: str = "sync"
    retry_s: float = 30.0  # how long a grapher retries a failed write (disk full, I/O error) before giving up


@dataclass
class ServiceConfig:
    progress: str = "backoff"  # backoff | busy
    backoff_min_us: float = 20.0
    backoff_max_ms: float = 2.0
    failure_grace_s: float = 30.0  # after a client fails, how long the others may take to finish
    summary: bool = True  # the visor prints a run summary
    log_level: str = "WARNING"


@dataclass
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
    mode: str = "log"  # log | log_many
    many: int = 1000  # events per log_many call
    threads: int = 1  # threads logging concurrently in each client
    seed: int = 0
    progress: bool = True


@dataclass
class Config:
    layout: LayoutConfig = field(default_factory=LayoutConfig)
    client: ClientConfig = field(default_factory=ClientConfig)
    keeper: KeeperConfig = field(default_factory=KeeperConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)


def as_config(cfg: Any = None) -> Config:
    """Turn ``None``, a :class:`Config`, a mapping or an OmegaConf node into a validated Config."""
    if cfg is None:
        out = Config()
    elif isinstance(cfg, Config):
        out = cfg
    else:
        from omegaconf import OmegaConf
        from omegaconf.errors import OmegaConfBaseException

        try:
            data = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg
            _check_keys(Config, data, "")
            merged = OmegaConf.merge(OmegaConf.structured(Config), data)
            out = OmegaConf.to_object(merged)  # type: ignore[assignment]
        except OmegaConfBaseException as exc:
            raise ConfigError(f"invalid configuration: {exc}") from None
    check_values(out)
    return out


def _check_keys(schema: type, data: Any, where: str) -> None:
    """Refuse keys the schema does not have (a typo must not be silently ignored)."""
    if not isinstance(data, dict):
        raise ConfigError(f"config section {where.rstrip('.') or '<root>'!r} must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(f"unknown config key {where + str(key)!r}; known keys here: {', '.join(sorted(fields))}")
        sub = fields[key].type
        sub_type = globals().get(sub) if isinstance(sub, str) else sub
        if isinstance(sub_type, type) and dataclasses.is_dataclass(sub_type):
            _check_keys(sub_type, value, f"{where}{key}.")


def _positive(section: str, obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not value > 0:
            raise ConfigError(f"{section}.{name}={value!r} must be > 0")


def check_values(cfg: Config) -> None:
    """Range checks that need no knowledge of the communicator."""
    if cfg.layout.keepers < 1 or cfg.layout.graphers < 1:
        raise ConfigError(
            f"layout needs at least one keeper and one grapher, got keepers={cfg.layout.keepers} "
            f"graphers={cfg.layout.graphers}"
        )
    _positive("client", cfg.client, "batch_bytes", "batch_ms", "max_inflight", "clock_pings")
    if cfg.client.clock_resync_s < 0:
        raise ConfigError(f"client.clock_resync_s={cfg.client.clock_resync_s} must be >= 0 (0: never)")
    if cfg.client.max_event_bytes < 0:
        raise ConfigError(f"client.max_event_bytes={cfg.client.max_event_bytes} must be >= 0")
    if cfg.client.policy not in ("block", "drop"):
        raise ConfigError(f"client.policy={cfg.client.policy!r} must be 'block' or 'drop'")
    _positive("keeper", cfg.keeper, "ring_slots", "window_ms", "acceptance_ms")
    _positive(
        "storage", cfg.storage, "segment_bytes", "segment_age_s", "events_chunk_rows", "payload_chunk_bytes", "retry_s"
    )
    if cfg.storage.fsync not in ("never", "sync", "always"):
        raise ConfigError(f"storage.fsync={cfg.storage.fsync!r} must be 'never', 'sync' or 'always'")
    if cfg.service.progress not in ("backoff", "busy"):
        raise ConfigError(f"service.progress={cfg.service.progress!r} must be 'backoff' or 'busy'")
    if not cfg.storage.root:
        raise ConfigError("storage.root must name a directory")
    w = cfg.workload
    if not 0 <= w.payload_min <= w.payload_avg <= w.payload_max:
        raise ConfigError(
            f"workload payload sizes must satisfy 0 <= payload_min <= payload_avg <= payload_max, got "
            f"workload.payload_min={w.payload_min} workload.payload_avg={w.payload_avg} "
            f"workload.payload_max={w.payload_max}"
        )
    if w.mode not in ("log", "log_many"):
        raise ConfigError(f"workload.mode={w.mode!r} must be 'log' or 'log_many'")


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
        ("workload", WorkloadConfig),
    ):
        cs.store(group=group, name=f"{group}_schema", node=schema)


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
