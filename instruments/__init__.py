"""Instrument adapters: the ZeroMQ wire format, the generic server, the client, and in-process adapters.

A lab writes only a :class:`~instruments.driver.Driver` for its microscope; the
generic :class:`~instruments.server.InstrumentServer` serves it, and the engine
talks to it through :class:`~instruments.client.ZmqInstrument`, which satisfies
:class:`engine.protocols.Instrument`.
"""
