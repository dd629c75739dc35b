"""Simulated instruments and the physics behind them.

:mod:`simulators.specimen` holds pure functions (specimen generation, image
formation, spectra); :mod:`simulators.synthetic` wraps them in a driver that
the generic ZeroMQ server serves like a real microscope.
"""
