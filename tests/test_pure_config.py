"""Configuration schema and validation (chronompi.config) and Hydra composition (chronompi.cli.compose)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from chronompi.cli import compose
from chronompi.config import (
    ClientConfig,
    Config,
    KeeperConfig,
    LayoutConfig,
    WorkloadConfig,
    as_config,
    check_values,
    to_dict,
)
from chronompi.errors import ConfigError


def test_none_gives_the_defaults() -> None:
    cfg = as_config(None)
    assert isinstance(cfg, Config)
    assert cfg == Config()
    assert cfg.layout == LayoutConfig(keepers=0, graphers=0, per_node=None, spares=0, clients=0)  # by the rule
    assert cfg.elastic.auto is None  # on when there are spares
    assert cfg.client.policy == "block"
    assert cfg.keeper.window_ms == 100.0
    assert cfg.service.progress == "backoff"
    assert cfg.workload.events == 20000
    assert as_config() == Config()


def test_config_instance_passes_through() -> None:
    cfg = Config(layout=LayoutConfig(keepers=3))
    assert as_config(cfg) is cfg


def test_dict_merges_over_defaults() -> None:
    data = {"layout": {"keepers": 2}, "client": {"policy": "drop"}, "workload": {"events": 7, "payload_max": 100}}
    original = copy.deepcopy(data)
    cfg = as_config(data)
    assert isinstance(cfg, Config)
    assert isinstance(cfg.layout, LayoutConfig) and isinstance(cfg.client, ClientConfig)
    assert cfg.layout.keepers == 2
    assert cfg.layout.graphers == 0  # untouched fields keep their default (0: by the rule)
    assert cfg.client.policy == "drop"
    assert cfg.client.batch_bytes == ClientConfig().batch_bytes
    assert cfg.workload.events == 7 and cfg.workload.payload_max == 100
    assert cfg.workload.payload_min == WorkloadConfig().payload_min
    assert cfg.keeper == KeeperConfig()
    assert data == original, "the caller's mapping is not modified"


def test_empty_dict_is_the_defaults() -> None:
    assert as_config({}) == Config()


def test_values_are_converted_to_the_schema_types() -> None:
    cfg = as_config({"keeper": {"window_ms": 5}, "layout": {"keepers": "2"}})
    assert cfg.keeper.window_ms == 5.0 and isinstance(cfg.keeper.window_ms, float)
    assert cfg.layout.keepers == 2 and isinstance(cfg.layout.keepers, int)


def test_omegaconf_node_is_accepted() -> None:
    from omegaconf import OmegaConf

    cfg = as_config(OmegaConf.create({"layout": {"graphers": 3}}))
    assert cfg.layout.graphers == 3


def test_round_trip_through_to_dict() -> None:
    cfg = as_config({"workload": {"events": 11}, "storage": {"root": "x"}})
    assert as_config(to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"evnts": 3}, "'evnts'"),
        ({"workload": {"evnts": 3}}, "'workload.evnts'"),
        ({"layout": {"keeper": 2}}, "'layout.keeper'"),
        ({"client": {"batch_bytes": 1, "polcy": "drop"}}, "'client.polcy'"),
    ],
)
def test_unknown_keys_are_refused(data: dict, key: str) -> None:
    with pytest.raises(ConfigError) as ei:
        as_config(data)
    msg = str(ei.value)
    assert f"unknown config key {key}" in msg
    assert "known keys here" in msg


def test_unknown_key_message_lists_the_known_keys() -> None:
    with pytest.raises(ConfigError) as ei:
        as_config({"workload": {"evnts": 3}})
    assert "events" in str(ei.value)


def test_section_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match="must be a mapping"):
        as_config({"layout": 3})


def test_wrong_type_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as ei:
        as_config({"layout": {"keepers": "many"}})
    assert "layout.keepers" in str(ei.value)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"client": {"policy": "x"}}, ["client.policy", "'x'"]),
        ({"keeper": {"window_ms": 0}}, ["keeper.window_ms", "> 0"]),
        ({"keeper": {"ring_slots": -1}}, ["keeper.ring_slots"]),
        ({"client": {"batch_bytes": 0}}, ["client.batch_bytes"]),
        ({"client": {"max_event_bytes": -1}}, ["client.max_event_bytes"]),
        ({"workload": {"payload_min": 100, "payload_avg": 64, "payload_max": 200}}, ["workload payload", "min=100"]),
        ({"workload": {"payload_avg": 300, "payload_max": 200}}, ["workload payload", "avg=300"]),
        ({"workload": {"payload_min": -1}}, ["workload payload", "min=-1"]),
        ({"workload": {"mode": "x"}}, ["workload.mode"]),
        ({"layout": {"keepers": -1}}, ["layout.keepers=-1", "or 0 for the default rule"]),
        ({"layout": {"graphers": -1}}, ["layout.graphers=-1"]),
        ({"layout": {"clients": -2}}, ["layout.clients=-2", ">= 0"]),
        ({"layout": {"per_node": "sometimes"}}, ["layout.per_node='sometimes'", "true or false or null"]),
        ({"elastic": {"auto": 3}}, ["elastic.auto=3", "null"]),
        ({"service": {"progress": "x"}}, ["service.progress", "'x'"]),
        ({"service": {"summary": "loud"}}, ["service.summary", "'loud'", "'line', 'table' or 'none'"]),
        ({"storage": {"root": ""}}, ["storage.root"]),
        ({"storage": {"segment_bytes": 0}}, ["storage.segment_bytes"]),
    ],
)
def test_bad_values_name_the_field(data: dict, words: list[str]) -> None:
    with pytest.raises(ConfigError) as ei:
        as_config(data)
    for w in words:
        assert w in str(ei.value)


def test_check_values_on_a_config_instance() -> None:
    with pytest.raises(ConfigError, match="service.progress"):
        as_config(Config(service=type(Config().service)(progress="spin")))
    check_values(Config())  # the defaults are valid


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        as_config({"layout": {"keepers": -1}})


# -- compose (Hydra) ----------------------------------------------------------------------------


@pytest.fixture(params=["cwd", "elsewhere"])
def where(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """Run compose from the project directory (./conf) and from a directory without conf/,
    where only the config groups shipped inside the package can be found."""
    monkeypatch.delenv("CHRONOMPI_CONF", raising=False)
    if request.param == "elsewhere":
        monkeypatch.chdir(tmp_path)
        assert not (tmp_path / "conf").exists()
    else:
        monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    return request.param


def test_compose_defaults(where: str) -> None:
    cfg = compose([])
    assert isinstance(cfg, Config)
    assert cfg.layout == LayoutConfig(keepers=0, graphers=0, per_node=None)  # conf/layout/auto.yaml: the rule
    assert cfg.elastic.auto is None
    assert compose(["layout=single"]).layout == LayoutConfig(keepers=1, graphers=1, per_node=False)
    assert cfg.workload.events == 20000
    assert cfg.storage.root == "chronompi-store"


@pytest.mark.parametrize(
    ("value", "mode"),
    [("line", "line"), ("TABLE", "table"), ("none", "none"), (True, "table"), (False, "none"), ("false", "none")],
)
def test_summary_modes_and_the_older_booleans(value: object, mode: str) -> None:
    assert Config().service.summary == "line"  # programs: one line
    assert as_config({"service": {"summary": value}}).service.summary == mode


def test_chronompi_run_keeps_the_table(where: str) -> None:
    assert compose([]).service.summary == "table"
    assert compose(["service.summary=false"]).service.summary == "none"  # Hydra hands over the text 'False'
    assert compose(["service.summary=line"]).service.summary == "line"


def test_compose_experiment(where: str) -> None:
    cfg = compose(["+experiment=million"])
    assert isinstance(cfg, Config)
    assert cfg.workload.events == 200000
    assert cfg.workload.stories == 1
    assert cfg.layout.keepers == 1


def test_compose_layout_group(where: str) -> None:
    cfg = compose(["layout=wide"])
    assert cfg.layout.keepers == 2
    assert cfg.layout.graphers == 2
    cfg = compose(["layout=per_node"])
    assert cfg.layout.per_node is True


def test_compose_value_overrides(where: str) -> None:
    cfg = compose(["workload.events=3", "client.policy=drop", "layout.graphers=4"])
    assert cfg.workload.events == 3
    assert cfg.client.policy == "drop"
    assert cfg.layout.graphers == 4
    # the optional keys: true/false, or null for "automatic" (the rule, the autoscaler when there are spares)
    cfg = compose(["layout=per_node", "layout.per_node=null", "elastic.auto=false", "layout.clients=5"])
    assert cfg.layout.per_node is None and cfg.elastic.auto is False and cfg.layout.clients == 5
    assert compose(["elastic.auto=true"]).elastic.auto is True


def test_compose_unknown_key(where: str) -> None:
    with pytest.raises(ConfigError) as ei:
        compose(["workload.evnts=3"])
    assert "workload.evnts" in str(ei.value)


def test_compose_unknown_group_option(where: str) -> None:
    with pytest.raises(ConfigError, match="layout"):
        compose(["layout=nope"])


def test_compose_bad_value(where: str) -> None:
    with pytest.raises(ConfigError, match="client.policy"):
        compose(["client.policy=x"])


def test_compose_config_dir_argument(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHRONOMPI_CONF", raising=False)
    monkeypatch.chdir(tmp_path)
    conf = tmp_path / "myconf"
    conf.mkdir()
    (conf / "config.yaml").write_text("defaults:\n  - chronompi_schema\n  - _self_\nlayout:\n  keepers: 3\n")
    assert compose([], config_dir=str(conf)).layout.keepers == 3
    monkeypatch.setenv("CHRONOMPI_CONF", str(conf))
    assert compose([]).layout.keepers == 3


def test_env_overrides_select_config_groups_as_chronompi_run_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """CHRONOMPI_OVERRIDES="layout=per_node" (a group of chronompi/conf, as chronompi run takes it) was refused for
    a session() program; now a group sets its section, a later key refines it, a wrong name lists the groups."""
    from chronompi.config import build

    c = build(None, ["layout=per_node", "layout.graphers=3"])
    assert (c.layout.per_node, c.layout.keepers, c.layout.graphers) == (True, 1, 3)
    c = build(None, ["+experiment=low_overhead"])  # a global package: several sections
    assert (c.keeper.window_ms, c.client.batch_ms) == (500.0, 200.0)
    monkeypatch.setenv("SCRATCH", "/scratch/me")
    assert build(None, ["storage=scratch"]).storage.root == "/scratch/me/chronompi-store"
    with pytest.raises(ConfigError, match=r"no layout config 'nope'; the layout configs are: auto, per_node"):
        build(None, ["layout=nope"])
    with pytest.raises(ConfigError, match="'client' is a config section, not a value"):
        build(None, ["client=x"])
    with pytest.raises(ConfigError, match="no layout config"):
        build(None, ["layout=../../etc/passwd"])  # a name, never a path
