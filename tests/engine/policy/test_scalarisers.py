"""Scalarisers and discovery curves against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from engine.policy import (
    BandIntegral,
    BandRatio,
    Logarithm,
    LoopArea,
    PeakPosition,
    Scalariser,
    TargetSimilarity,
    UserFunction,
)
from engine.report import measurements_to, recall_curve, top_set

AXIS = np.linspace(0.0, 4.0, 41)  # 0.1 per channel


def test_band_integral_by_hand() -> None:
    spectra = np.vstack([np.ones(41), np.arange(41.0)])
    s = BandIntegral(1.0, 2.0)
    # channels 1.0, 1.1, ..., 2.0 (11 channels) of width 0.1
    np.testing.assert_allclose(s(spectra, AXIS), [1.1, 0.1 * sum(range(10, 21))])
    assert s.units("eV") == "counts eV" and isinstance(s, Scalariser)
    with pytest.raises(ValueError, match="holds no channel"):
        s(spectra, AXIS + 100)


def test_peak_position_refines_between_channels() -> None:
    true = np.array([1.23, 2.5, 3.071])
    spectra = np.exp(-0.5 * ((AXIS[None, :] - true[:, None]) / 0.2) ** 2)
    got = PeakPosition(0.5, 3.5)(spectra, AXIS)
    np.testing.assert_allclose(got, true, atol=0.01)  # finer than the 0.1 channel
    edge = PeakPosition(2.0, 2.4)(spectra[:1], AXIS)  # the maximum sits on the window's edge
    assert edge[0] == pytest.approx(2.0)


def test_band_ratio_and_zero_denominator() -> None:
    spectra = np.vstack([np.r_[np.full(20, 2.0), np.full(21, 1.0)], np.r_[np.full(20, 1.0), np.zeros(21)]])
    ratio = BandRatio(BandIntegral(0.0, 0.5), BandIntegral(3.0, 3.5))(spectra, AXIS)
    assert ratio[0] == pytest.approx(2.0) and np.isnan(ratio[1])


def test_target_similarity() -> None:
    target = TargetSimilarity.peak(AXIS, 2.0, 0.5)
    t = np.asarray(target.target)
    spectra = np.vstack([3 * t, np.roll(t, 10), np.zeros(41)])
    got = target(spectra, AXIS)
    assert got[0] == pytest.approx(1.0) and got[1] < 0.5 and got[2] == 0.0


def test_user_function(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "myscalar.py").write_text(
        "def area(s, axis):\n    return s.sum(axis=1) * 2\n\ndef bad(s, axis):\n    return s\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    spectra = np.ones((3, 41))
    np.testing.assert_allclose(UserFunction("myscalar:area", "a.u.")(spectra, AXIS), [82, 82, 82])
    with pytest.raises(ValueError, match="returned shape"):
        UserFunction("myscalar:bad")(spectra, AXIS)
    with pytest.raises(ValueError, match="module:function"):
        UserFunction("myscalar")(spectra, AXIS)
    with pytest.raises(ValueError, match="cannot load"):
        UserFunction("myscalar:nothing")(spectra, AXIS)


def test_loop_area_by_hand() -> None:
    # a square loop: up at R = 1 from V = 0 to 2, down at R = -1 from 2 back to 0 -> area 2 x 2 = 4
    v = np.array([0.0, 1.0, 2.0, 2.0, 1.0, 0.0])
    square = np.array([[1.0, 1.0, 1.0, -1.0, -1.0, -1.0]])
    np.testing.assert_allclose(LoopArea()(square, v), [4.0])
    # a BEPS-like triangle 0 -> +8 -> 0 -> -8 -> 0 with a response that ignores the direction: no area
    tri = np.r_[np.linspace(0, 8, 9), np.linspace(7, -8, 16), np.linspace(-7, -1, 7)]
    np.testing.assert_allclose(LoopArea()(np.tanh(tri)[None], tri), [0.0], atol=1e-12)
    # a hysteretic response (switching late in the sweep direction) encloses area
    hysteretic = np.tanh(tri - 2 * np.sign(np.gradient(tri)))
    assert LoopArea()(hysteretic[None], tri)[0] > 1.0
    assert LoopArea().units("V") == "counts V"


def test_discovery_curves_by_hand() -> None:
    values = np.array([5.0, 1.0, 9.0, 9.0, 0.0, 3.0])
    np.testing.assert_array_equal(top_set(values, 0.2), [2, 3])  # ceil(1.2) = 2 best
    np.testing.assert_array_equal(top_set(values, 0.01), [2, 3])  # one, plus the tie
    curve = recall_curve([0, 3, 1, 2], np.array([2, 3]))
    np.testing.assert_allclose(curve, [0.0, 0.5, 0.5, 1.0])
    assert measurements_to(curve, 0.5) == 2 and measurements_to(curve, 1.0) == 4
    assert measurements_to(curve[:1], 0.5) == float("inf")


def test_logarithm_keeps_the_ranking() -> None:
    spectra = np.array([[1.0, 1.0], [10.0, 10.0], [0.0, 0.0]])
    axis = np.array([0.0, 1.0])
    out = Logarithm(BandIntegral(0, 1))(spectra, axis)
    np.testing.assert_allclose(out[:2], np.log([2.0, 20.0]))
    assert np.isnan(out[2])  # no log of zero: the GP skips it
    assert Logarithm(BandIntegral(0, 1)).units("eV") == "ln(counts eV)"
