"""The parametric cluster design space: decoding, geometry, constraints and physics trends."""

from __future__ import annotations

import numpy as np
import pytest

from simulators.design_space import ARRANGEMENTS, ClusterDesign, ClusterSpace

SPACE = ClusterSpace()


def test_decode_stays_in_bounds_and_encode_inverts_it() -> None:
    rng = np.random.default_rng(0)
    for u in SPACE.sample(rng, 300):
        d = SPACE.decode(u)
        assert d.arrangement in ARRANGEMENTS and d.material in SPACE.materials
        assert SPACE.n_range[0] <= d.n <= SPACE.n_range[1]
        assert SPACE.radius_range_nm[0] <= d.radius_nm <= SPACE.radius_range_nm[1]
        assert SPACE.gap_range_nm[0] <= d.gap_nm <= SPACE.gap_range_nm[1]
        back = SPACE.decode(SPACE.encode(d))
        assert (back.arrangement, back.n, back.material) == (d.arrangement, d.n, d.material)
        assert back.radius_nm == pytest.approx(d.radius_nm) and back.gap_nm == pytest.approx(d.gap_nm)
    with pytest.raises(ValueError, match=r"\[0, 1\]\^6"):
        SPACE.decode(np.zeros(5))


def test_decoded_features_put_equal_structures_at_one_point() -> None:
    space = ClusterSpace(n_range=(1, 5), materials=("Au", "Ag", "ITO"))
    single = [ClusterDesign(a, 1, 20.0, g, "Au", 0.05) for a, g in (("chain", 2.0), ("square", 9.0), ("random", 15.0))]
    dimers = [ClusterDesign(a, 2, 12.0, 3.0, "Ag", 0.1) for a in ("chain", "triangle", "square")]
    metal_tin = [ClusterDesign("triangle", 3, 30.0, 6.0, "Au", s) for s in (0.03, 0.12)]
    for same in (single, dimers, metal_tin):
        f = space.features(np.array([space.encode(d) for d in same]))
        np.testing.assert_allclose(f, np.repeat(f[:1], len(same), axis=0), atol=1e-9)
    different = [
        ClusterDesign("chain", 3, 20.0, 4.0, "Au", 0.1),
        ClusterDesign("triangle", 3, 20.0, 4.0, "Au", 0.1),
        ClusterDesign("random", 2, 12.0, 3.0, "Ag", 0.1),
        ClusterDesign("chain", 2, 12.0, 3.0, "Ag", 0.1),
        ClusterDesign("chain", 2, 12.0, 3.0, "ITO", 0.03),
        ClusterDesign("chain", 2, 12.0, 3.0, "ITO", 0.12),
    ]
    f = space.features(np.array([space.encode(d) for d in different]))
    assert len({tuple(np.round(row, 9)) for row in f}) == len(different)
    # radius and gap are logarithmic: doubling either moves the point by ln 2 along its column
    pair = [ClusterDesign("chain", 3, 10.0, 2.0, "Au", 0.1), ClusterDesign("chain", 3, 20.0, 4.0, "Au", 0.1)]
    f = space.features(np.array([space.encode(d) for d in pair]))
    np.testing.assert_allclose(f[1] - f[0], [0, 0, np.log(2), np.log(2), 0, 0], atol=1e-9)


def test_no_design_has_overlapping_spheres() -> None:
    rng = np.random.default_rng(1)
    for u in SPACE.sample(rng, 200):
        d = SPACE.decode(u)
        c = d.centres_nm()
        if d.n > 1:
            dist = np.linalg.norm(c[:, None] - c[None], axis=-1) + np.eye(d.n) * 1e9
            assert dist.min() >= 2 * d.radius_nm + d.gap_nm - 1e-9  # every surface gap >= the design's gap
        d.cluster()  # the CDA cluster checks overlaps itself
        np.testing.assert_allclose(c.mean(axis=0), 0.0, atol=1e-9)


@pytest.mark.parametrize(
    ("arrangement", "n", "neighbours"),
    [("chain", 4, 3), ("triangle", 3, 3), ("square", 4, 4)],
)
def test_regular_arrangements_have_their_shape(arrangement: str, n: int, neighbours: int) -> None:
    d = ClusterDesign(arrangement, n, 10.0, 2.0, "Au", 0.0)
    c = d.centres_nm()
    dist = np.linalg.norm(c[:, None] - c[None], axis=-1)
    touching = np.isclose(dist, 22.0).sum() // 2  # pairs at the pitch 2r + gap
    assert touching == neighbours
    if arrangement == "chain":
        assert np.allclose(c[:, 1], 0.0)


def test_random_arrangement_is_a_function_of_the_design() -> None:
    d = ClusterDesign("random", 5, 10.0, 3.0, "Ag", 0.0)
    np.testing.assert_array_equal(d.centres_nm(), d.centres_nm())
    assert not np.allclose(d.centres_nm(), ClusterDesign("random", 5, 10.0, 3.5, "Ag", 0.0).centres_nm())


def test_more_tin_makes_an_ito_cluster_bluer_and_closer_dimers_redder() -> None:
    energy = np.linspace(0.3, 1.5, 241)

    def peak(d: ClusterDesign) -> float:  # the plasmon: the peak of σ_sca / E⁴ ∝ |α|², not the E⁴ rise
        return float(energy[np.argmax(d.spectrum(energy) / energy**4)])

    low, high = ClusterDesign("chain", 2, 20.0, 4.0, "ITO", 0.04), ClusterDesign("chain", 2, 20.0, 4.0, "ITO", 0.12)
    assert peak(high) > peak(low)
    gold = np.linspace(1.6, 2.8, 241)
    far = ClusterDesign("chain", 2, 20.0, 20.0, "Au", 0.0).spectrum(gold)
    near = ClusterDesign("chain", 2, 20.0, 2.0, "Au", 0.0).spectrum(gold)
    assert gold[np.argmax(near)] < gold[np.argmax(far)]  # coupling red-shifts the longitudinal mode
