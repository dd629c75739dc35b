"""The README's driver example works: locally and over ZeroMQ (the driver contract runs it too)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.errors import OutOfLimits
from instruments.client import ZmqInstrument
from instruments.driver import Driver
from instruments.local import LocalInstrument

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_driver_class() -> Any:
    """The ``ToyScope`` class of the README's driver example, executed from the README's text."""
    text = README.read_text(encoding="utf-8")
    block = re.search(r"<!-- driver-example -->\n```python\n(.*?)```\n<!-- /driver-example -->", text, re.S)
    assert block is not None, "README lost its driver example"
    code = block.group(1)
    assert len(code.splitlines()) < 70, "the example should stay a few dozen lines"
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace["ToyScope"]


@pytest.mark.parametrize("transport", ["local", "zmq"])
def test_readme_driver(transport: str, serve: Any, zmq_context: Any) -> None:
    toy = readme_driver_class()(dwell_s=0.0)
    assert isinstance(toy, Driver)
    if transport == "local":
        inst: Any = LocalInstrument(toy)
    else:
        inst = ZmqInstrument(serve(toy).endpoint, zmq_context, timeout_s=5)
    assert inst.describe().name == "toyscope"
    assert inst.acquire_image("sem").data.shape == (100, 100)
    m = inst.measure(np.array([[100.0, 10.0], [900.0, 10.0]]))
    peaks = 400 + 0.5 * np.argmax(m.spectra, axis=1)
    np.testing.assert_allclose(peaks, [510.0, 590.0], atol=1.0)
    with pytest.raises(OutOfLimits):
        inst.measure(np.array([[1001.0, 0.0]]))
    inst.close()
