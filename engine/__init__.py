"""dualscope engine: the autonomous-experiment loop and everything that decides.

The engine owns the domain types, the small protocols it needs from the outside
world (``Instrument``, ``Policy``,
``Recorder``, ``StopRule``), the
campaign loop, the Zarr run storage and the command line. It never imports
``zmq``: instruments reach it through the ``Instrument``
protocol.
"""

__version__ = "0.1.0"
