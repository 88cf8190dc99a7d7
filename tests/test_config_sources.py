"""Config errors name their real source (cfg, $CHRONOMPI_OVERRIDES, the command line of ``chronompi run``),
in our words, and every count, size and rate is range-checked (no MPI)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from chronompi.cli import compose
from chronompi.config import Config, LayoutConfig, ServiceConfig, WorkloadConfig, as_config, check_values
from chronompi.errors import ConfigError
from chronompi.session import with_env_overrides

# what OmegaConf's own messages look like: none of it may reach a user
INTERNALS = ("full_key", "object_type", "reference_type", "not in 'StorageConfig'", "not in 'Config'", "$VALUE")


def resolved(cfg: object) -> Config:
    """What session() start-up does with the cfg it is given."""
    return as_config(with_env_overrides(cfg))


def error_of(cfg: object) -> str:
    with pytest.raises(ConfigError) as ei:
        resolved(cfg)
    msg = str(ei.value)
    assert not any(word in msg for word in INTERNALS), msg
    assert "\n" not in msg, msg
    return msg


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("CHRONOMPI_OVERRIDES", raising=False)
    return monkeypatch


# -- a bad cfg is a bad cfg, whatever $CHRONOMPI_OVERRIDES holds --------------------------------------------------


@pytest.mark.parametrize(
    ("cfg", "words"),
    [
        ({"storag": {"root": "x"}}, ["unknown config key 'storag'; known keys here: client, elastic, keeper, layout"]),
        ({"storage": {"rooot": "x"}}, ["unknown config key 'storage.rooot'; known keys here: ", "root"]),
        ({"storage": {"segment_bytes": "abc"}}, ["storage.segment_bytes='abc'", "not an integer"]),
        ({"layout": {"per_node": "maybe"}}, ["layout.per_node='maybe'", "true or false"]),
        ({"storage": 3}, ["config section 'storage' must be a mapping"]),
    ],
)
@pytest.mark.parametrize("env", ["storage.segment_age_s=5", "layout.graphers=2 storage.root=/tmp/x"])
def test_bad_cfg_is_reported_as_cfg_with_overrides_set(
    cfg: dict, words: list[str], env: str, no_env: pytest.MonkeyPatch
) -> None:
    without = error_of(cfg)
    no_env.setenv("CHRONOMPI_OVERRIDES", env)
    with_env = error_of(cfg)
    assert with_env == without, "the variable must not change how a bad cfg is reported"
    assert with_env.startswith("in cfg: ")
    assert "CHRONOMPI_OVERRIDES" not in with_env
    for w in words:
        assert w in with_env


# -- a bad $CHRONOMPI_OVERRIDES names the entry and the variable ---------------------------------------------------


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ("storage.rooot=5", ["entry 'storage.rooot=5'", "unknown config key 'storage.rooot'", "segment_bytes"]),
        ("storag.root=/x", ["entry 'storag.root=/x'", "unknown config key 'storag'", "storage"]),
        ("storage.segment_bytes=abc", ["storage.segment_bytes='abc' is not an integer", "segment_bytes=1073741824"]),
        ("keeper.window_ms=fast", ["keeper.window_ms='fast' is not a number"]),
        ("layout.per_node=maybe", ["layout.per_node='maybe' is not true or false"]),
        ("layout=3", ["there is no layout config '3'", "configs are: auto, per_node", "layout.keepers="]),
        ("client=3", ["'client' is a config section, not a value", "client.batch_bytes="]),
        ("layout.keepers.x=3", ["'layout.keepers' is a value, not a config section"]),
        ("storage.root", ["entry 'storage.root'", "not a key=value pair"]),
        ("workload.events=-5", ["entry 'workload.events=-5'", "workload.events=-5 must be >= 0"]),
        ("storage.root= layout.keepers=2", ["entry 'storage.root='", "storage.root='' must be a directory"]),
    ],
)
@pytest.mark.parametrize("cfg", [None, {"storage": {"root": "mine"}}, Config()])
def test_bad_override_names_the_entry_and_the_variable(
    env: str, words: list[str], cfg: object, no_env: pytest.MonkeyPatch
) -> None:
    no_env.setenv("CHRONOMPI_OVERRIDES", env)
    msg = error_of(cfg)
    assert msg.startswith("in CHRONOMPI_OVERRIDES entry "), msg
    for w in words:
        assert w in msg, msg


def test_unsplittable_overrides(no_env: pytest.MonkeyPatch) -> None:
    no_env.setenv("CHRONOMPI_OVERRIDES", "storage.root='/a b")
    msg = error_of(None)
    assert "CHRONOMPI_OVERRIDES=" in msg and "No closing quotation" in msg and "quote" in msg


def test_good_overrides_apply_over_cfg(no_env: pytest.MonkeyPatch) -> None:
    no_env.setenv(
        "CHRONOMPI_OVERRIDES", "storage.root='/scratch/a b' layout.per_node=true keeper.window_ms=5 layout.keepers=2"
    )
    cfg = resolved({"layout": {"keepers": 3, "graphers": 4}, "storage": {"root": "mine"}})
    assert cfg.storage.root == "/scratch/a b"  # the variable wins over cfg
    assert cfg.layout == LayoutConfig(keepers=2, graphers=4, per_node=True)
    assert cfg.keeper.window_ms == 5.0 and isinstance(cfg.keeper.window_ms, float)
    given = Config()
    assert resolved(given).layout.keepers == 2
    assert given == Config(), "a Config given as cfg is not modified"


def test_overrides_may_repair_cfg(no_env: pytest.MonkeyPatch) -> None:
    """Ranges are checked on the result: an override may fix what cfg got wrong."""
    no_env.setenv("CHRONOMPI_OVERRIDES", "layout.keepers=1")
    assert resolved({"layout": {"keepers": 0}}).layout.keepers == 1


def test_no_variable_returns_cfg_as_it_is(no_env: pytest.MonkeyPatch) -> None:
    cfg = {"layout": {"keepers": 2}}
    assert with_env_overrides(cfg) is cfg
    no_env.setenv("CHRONOMPI_OVERRIDES", "   ")
    assert with_env_overrides(cfg) is cfg


def test_range_error_names_its_source(no_env: pytest.MonkeyPatch) -> None:
    assert error_of({"client": {"batch_bytes": 0}}) == "in cfg: client.batch_bytes=0 must be > 0"
    no_env.setenv("CHRONOMPI_OVERRIDES", "client.batch_bytes=0")
    assert error_of({"client": {"batch_bytes": 5}}) == (
        "in CHRONOMPI_OVERRIDES entry 'client.batch_bytes=0': client.batch_bytes=0 must be > 0"
    )


# -- the command line of chronompi run ------------------------------------------------------------------------------


@pytest.fixture
def elsewhere(no_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Compose with the config groups shipped in the package."""
    no_env.delenv("CHRONOMPI_CONF", raising=False)
    no_env.chdir(tmp_path)


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["storage.segment_bytes=abc"], ["storage.segment_bytes='abc' is not an integer", "=1073741824"]),
        (["workload.rate=fast"], ["workload.rate='fast' is not a number"]),
        (["layout.per_node=maybe"], ["layout.per_node='maybe' is not true or false"]),
        (["workload.evnts=3"], ["unknown config key 'workload.evnts'; known keys here: ", "events"]),
        (["+workload.evnts=3"], ["unknown config key 'workload.evnts'"]),
        (["layout=nope"], ["layout=nope: no such layout; the choices are ", "wide"]),
        (["storage=3"], ["storage=3", "config group"]),
        (["workload.events"], ["'workload.events'", "key=value"]),
        (["workload.events=-5"], ["workload.events=-5 must be >= 0"]),
        (["workload.payload_max=300000", "client.max_event_bytes=1000"], ["workload.payload_max=300000 exceeds"]),
    ],
)
def test_command_line_errors_name_the_command_line(overrides: list[str], words: list[str], elsewhere: None) -> None:
    with pytest.raises(ConfigError) as ei:
        compose(overrides)
    msg = str(ei.value)
    assert not any(word in msg for word in INTERNALS), msg
    assert "\n" not in msg, msg
    if "exceeds" not in msg:  # a cross-check of two keys has no one source
        assert msg.startswith("in the overrides on the command line: "), msg
    for w in words:
        assert w in msg, msg


# -- every count, size and rate is checked ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "bad", "allowed"),
    [
        ("workload.events", -5, ">= 0"),
        ("workload.chronicles", 0, ">= 1"),
        ("workload.stories", 0, ">= 1"),
        ("workload.stories", -2, ">= 1"),
        ("workload.many", 0, ">= 1"),
        ("workload.threads", 0, ">= 1"),
        ("workload.rate", -1.0, ">= 0"),
        ("workload.rate", math.nan, ">= 0"),
        ("workload.seed", -1, ">= 0"),
        ("service.backoff_min_us", -1.0, ">= 0"),
        ("service.backoff_max_ms", -1.0, ">= 0"),
        ("service.failure_grace_s", -1.0, ">= 0"),
        ("service.hang_check_s", -1.0, ">= 0"),
        ("service.log_level", "LOUD", "a logging level"),
        ("client.max_inflight", 0, ">= 1"),
        ("client.clock_pings", 0, ">= 1"),
        ("client.clock_resync_s", -1.0, ">= 0"),
        ("keeper.acceptance_ms", 0.0, "> 0"),
        ("storage.events_chunk_rows", 0, "> 0"),
        ("storage.retry_s", 0.0, "> 0"),
    ],
)
def test_out_of_range_names_key_value_and_range(key: str, bad: object, allowed: str) -> None:
    section, name = key.split(".")
    with pytest.raises(ConfigError) as ei:
        as_config({section: {name: bad}})
    assert str(ei.value).startswith(f"in cfg: {key}={bad!r} must be {allowed}"), str(ei.value)


@pytest.mark.parametrize("payload", [{"payload_min": -1}, {"payload_min": 9, "payload_avg": 8, "payload_max": 9}])
def test_payload_sizes_are_checked(payload: dict) -> None:
    with pytest.raises(ConfigError, match="workload payload sizes must satisfy 0 <= payload_min"):
        as_config({"workload": payload})


def test_backoff_min_above_max() -> None:
    with pytest.raises(ConfigError, match=r"service.backoff_min_us=5000.0 must not exceed service.backoff_max_ms=2.0"):
        as_config({"service": {"backoff_min_us": 5000}})


def test_the_edges_of_the_ranges_are_allowed() -> None:
    check_values(
        Config(
            workload=WorkloadConfig(events=0, chronicles=1, stories=1, many=1, threads=1, rate=0.0, seed=0),
            service=ServiceConfig(backoff_min_us=0.0, backoff_max_ms=0.0, failure_grace_s=0.0, log_level="debug"),
        )
    )


def test_a_default_config_instance_has_no_source_to_name() -> None:
    with pytest.raises(ConfigError) as ei:
        check_values(Config(workload=WorkloadConfig(events=-5)))
    assert str(ei.value) == "workload.events=-5 must be >= 0"
