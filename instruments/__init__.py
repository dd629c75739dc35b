"""Instrument adapters: the ZeroMQ wire format, the generic server, the client, and in-process adapters.

A lab writes only a ``Driver`` for its microscope; the
generic ``InstrumentServer`` serves it, and the engine
talks to it through ``ZmqInstrument``, which satisfies
``engine.protocols.Instrument``.
"""
