"""The latent design space: points of a trained structure VAE's latent space as candidate structures.

A design is a point ``u`` of ``[0, 1]^k`` (``k`` = the surrogate's latent dimension), mapped to the
latent point ``z = span · (2u − 1)`` (``±span`` prior standard deviations of the VAE's N(0, I) prior)
and decoded by the image decoder to a structure patch ``(p, p)``; particle detection (injected: the
composition root passes ``simulators.particles.detect_spheres``) turns the patch into spheres the
simulator evaluates. So the dual VAE proposes structures it has never seen.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from engine.design._spheres import geometry_vector
from engine.errors import ConfigError
from engine.surrogate import Surrogate

Detect = Callable[[NDArray[np.float64]], tuple[NDArray[np.float64], NDArray[np.float64]]]
"""Patch ``(p, p)`` → sphere centres ``(n, 2)`` nm and radii ``(n,)`` nm."""


class LatentDesignSpace:
    """Decodes designs ``(m, k)`` in the unit cube to structure patches and sphere geometries.

    Args:
        surrogate: a trained surrogate with an image decoder (dualvae or imagevae).
        detect: particle detection on one decoded patch.
        span: the cube covers ``±span`` prior standard deviations of each latent coordinate.
        max_spheres: geometry vectors hold at most this many spheres (``3 · max_spheres`` values).

    Examples:
        >>> import numpy as np, torch
        >>> from engine.surrogate import PairedData, Surrogate, SurrogateConfig
        >>> rng = np.random.default_rng(0)
        >>> vae = Surrogate(SurrogateConfig(batch_size=8, latent=2), 8, 6, device=torch.device("cpu"))
        >>> _ = vae.fit(PairedData.paired(rng.random((16, 8, 8)), rng.random((16, 6))), 3)
        >>> def detect(patch):  # one sphere at the brightest pixel, 5 nm per pixel
        ...     y, x = np.unravel_index(np.argmax(patch), patch.shape)
        ...     return np.array([[5.0 * x, 5.0 * y]]), np.array([10.0])
        >>> space = LatentDesignSpace(vae, detect)
        >>> space.dim, space.patches(np.full((1, 2), 0.5)).shape, space.geometry(np.full((3, 2), 0.5)).shape
        (2, (1, 8, 8), (3, 24))
    """

    def __init__(self, surrogate: Surrogate, detect: Detect, span: float = 2.5, max_spheres: int = 8):
        if span <= 0:
            raise ConfigError("span must be > 0")
        self._surrogate, self._detect = surrogate, detect
        self.span, self.max_spheres = span, max_spheres
        self.dim = int(surrogate.config.latent)

    def latent(self, u: NDArray[np.float64]) -> NDArray[np.float64]:
        """Latent points ``(m, k)`` of designs ``u (m, k)``."""
        u = np.atleast_2d(np.asarray(u, dtype=np.float64))
        if u.shape[1] != self.dim:
            raise ConfigError(f"designs of this latent space have {self.dim} coordinates, got {u.shape[1]}")
        return self.span * (2.0 * np.clip(u, 0.0, 1.0) - 1.0)

    def patches(self, u: NDArray[np.float64]) -> NDArray[np.float64]:
        """Decoded structure patches ``(m, p, p)`` of designs ``u (m, k)``."""
        z = self.latent(u)
        out = [self._surrogate.decode_latent(z[i : i + 256])[0] for i in range(0, z.shape[0], 256)]
        patches = np.concatenate(out).astype(np.float64)
        return patches.reshape(z.shape[0], patches.shape[-2], patches.shape[-1])

    def geometry(self, u: NDArray[np.float64]) -> NDArray[np.float64]:
        """Geometry vectors ``(m, 3 · max_spheres)``: ``x, y, r`` (nm) per sphere, NaN-padded."""
        return np.array([geometry_vector(*self._detect(patch), self.max_spheres) for patch in self.patches(u)])
