"""Configuration: one TOML file, typed and frozen; errors name the key and what is allowed."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
from pydantic import ValidationError

from engine.cli.drivers import driver_options
from engine.config import RunConfig, load_config, parse_config
from engine.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "demo.toml"


def test_example_is_the_demo_config() -> None:
    packaged = resources.files("engine.cli").joinpath("demo.toml").read_text(encoding="utf-8")
    assert EXAMPLE.read_text(encoding="utf-8") == packaged
    config, _ = load_config(EXAMPLE)
    assert config.stop.budget == 200 and config.instrument.mode == "spawn"
    driver_options(config.instrument.driver, config.instrument.options)


def test_defaults_and_frozen() -> None:
    config = parse_config("")
    assert isinstance(config, RunConfig) and config.policy.name == "raster"
    with pytest.raises(ValidationError):
        config.stop.budget = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        (
            "[run]\nnmae = 'x'",
            ["run.nmae: unknown key", "allowed here: chunk_rows, figure, name, output_dir, pipeline, seed"],
        ),
        (
            "[polcy]\nname = 'random'",
            ["polcy: unknown key", "candidates, drift, faults, instrument, operator, policy, run, safety, stop"],
        ),
        (
            "[policy]\nname = 'bo'",
            ["policy.name", "'random', 'raster', 'gp-position', 'dualvae-bo', 'dualvae-spectral' or 'dkl'", "'bo'"],
        ),
        ("[stop]\nbudget = 0", ["stop.budget", "greater than or equal to 1"]),
        ("[instrument]\nmode = 'telepathy'", ["instrument.mode", "'spawn', 'connect' or 'local'"]),
        ("[run]\nname = 'has space'", ["run.name", "pattern"]),
        ("[run\nname=", ["not valid TOML"]),
    ],
)
def test_errors_name_the_key(text: str, needles: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "my.toml")
    message = str(info.value)
    assert message.startswith("my.toml")
    for needle in needles:
        assert needle in message


def test_driver_options_are_checked_by_the_driver() -> None:
    with pytest.raises(ConfigError, match=r"image_pixel: unknown key; allowed here: .*image_pixels"):
        driver_options("synthetic", {"image_pixel": 64})
    with pytest.raises(
        ConfigError,
        match="unknown driver 'jeol'; available: darkfield-twin, design-cda, nion, replay, stem-twin, synthetic",
    ):
        driver_options("jeol", {})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.toml")
