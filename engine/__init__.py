"""dualscope engine: the autonomous-experiment loop and everything that decides.

The engine owns the domain types, the small protocols it needs from the outside
world (``Instrument``, ``Policy``,
``Recorder``, ``StopRule``), the
campaign loop, the Zarr run storage and the command line. It never imports
``zmq``: instruments reach it through the ``Instrument``
protocol.
"""

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``engine.Experiment`` and ``engine.AskTell``: the Python face of a campaign, imported on first use."""
    if name in ("Experiment", "AskTell"):  # the composition root, imported only when asked for (as engine._lazy)
        import importlib

        return getattr(importlib.import_module("engine.cli.experiment"), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
