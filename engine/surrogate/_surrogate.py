"""The surrogate API: fit, update, predict with uncertainty, latents, calibration, checkpoints.

Uncertainty: the image latent is sampled from its posterior ``q(z | patch)`` (``samples`` draws);
each draw is decoded to a spectrum mean and a per-channel variance (heteroscedastic noise); the
predictive mean and variance follow the law of total variance,
``Var = E[σ²] + Var[μ]``. ``Surrogate.calibrate`` then fits one scale on held-out data so
that 90 % intervals cover 90 % of true values; ``Surrogate.coverage`` measures it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from engine import __version__
from engine.errors import ConfigError, DualscopeError
from engine.surrogate._data import PairedData
from engine.surrogate._model import DualModel, NetConfig
from engine.surrogate._training import Batch, TrainReport, train_steps, with_rollback

CHECKPOINT_FORMAT = 1
Z90 = 1.6448536269514722


class CheckpointError(DualscopeError):
    """A checkpoint is missing, damaged or from an incompatible version.

    Examples:
        >>> issubclass(CheckpointError, Exception)  # raised by Surrogate.from_state on a foreign or damaged checkpoint
        True
    """


@dataclass(frozen=True)
class SurrogateConfig:
    """Model and optimiser settings (see ``engine.surrogate.model.NetConfig`` for the losses).

    Attributes:
        kind: ``dualvae``, ``im2spec`` or ``spec2im``.
        latent: latent dimension.
        beta, gamma, cross: KL, tie and cross-reconstruction weights.
        invariant: rotation/translation-invariant image VAE.
        width: base convolution filters.
        learning_rate: Adam step size.
        batch_size: rows per step.
        samples: posterior draws per prediction.

    Examples:
        >>> SurrogateConfig(kind="im2spec", latent=4).latent
        4
    """

    kind: str = "dualvae"
    latent: int = 8
    beta: float = 0.01
    gamma: float = 1.0
    cross: float = 1.0
    invariant: bool = False
    width: int = 8
    learning_rate: float = 2e-3
    batch_size: int = 128
    samples: int = 32


@dataclass(frozen=True)
class Normaliser:
    """Patches standardised with a global mean and std; spectra divided by a global scale.

    Attributes:
        patch_mean: mean patch intensity.
        patch_std: its standard deviation.
        spectrum_scale: the 99th percentile of the measured spectra's maxima, counts.

    Examples:
        >>> Normaliser.fit(data).spectrum_scale > 0
        True
    """

    patch_mean: float
    patch_std: float
    spectrum_scale: float

    @classmethod
    def fit(cls, data: PairedData) -> Normaliser:
        """Statistics of ``data`` (spectra: the 99th percentile of each measured spectrum's maximum)."""
        measured = data.spectra[data.has_spectrum]
        scale = float(np.percentile(measured.max(axis=1), 99)) if measured.size else 1.0
        return cls(float(data.patches.mean()), float(data.patches.std()) or 1.0, scale if scale > 0 else 1.0)


class Surrogate:
    """A trained (or trainable) im2spec / spec2im / dual-VAE surrogate.

    Args:
        config: model settings.
        patch: patch side ``p`` (multiple of 8).
        channels: spectral channels ``c``.
        device: where the networks live (chosen by the caller).
        seed: seeds the weights, the mini-batches and the latent samples.

    Examples:
        >>> mean, std = model.predict_spectra(data.patches[:3])  # im2spec, with uncertainty
        >>> mean.shape, bool((std > 0).all())
        ((3, 6), True)
        >>> model.image_latent(data.patches[:3]).shape  # the latent the GP of dualvae-bo works in
        (3, 8)
    """

    def __init__(self, config: SurrogateConfig, patch: int, channels: int, *, device: torch.device, seed: int = 0):
        self.config, self.patch, self.channels, self.device, self.seed = config, patch, channels, device, seed
        net_cfg = NetConfig(
            config.kind,
            patch,
            channels,
            config.latent,
            config.beta,
            config.gamma,
            config.cross,
            config.invariant,
            config.width,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = DualModel(net_cfg).to(device)
        self.generator = torch.Generator(device=device).manual_seed(seed + 1)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=config.learning_rate)
        self.norm: Normaliser | None = None
        self.sigma_scale = 1.0
        self.version = 0

    def to(self, device: torch.device) -> Surrogate:
        """Move the networks, the optimiser's moments and the random stream to ``device`` (in place).

        A remote trainer moves the surrogate onto the GPU of the worker that refits it and back onto the
        CPU before sending it home. The random stream continues from a seed drawn from the old one (a
        CUDA generator cannot take a CPU generator's state).

        Args:
            device: where the networks should live from now on.

        Returns:
            This surrogate.

        Examples:
            >>> model.to(torch.device("cpu")).device
            device(type='cpu')
        """
        if device == self.device:
            return self
        self.net.to(device)
        for state in self.optimizer.state.values():
            for key, value in state.items():
                if isinstance(value, torch.Tensor) and key != "step":  # Adam keeps its step count on the CPU
                    state[key] = value.to(device)
        seed = int(torch.randint(2**62, (1,), generator=self.generator, device=self.generator.device))
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.device = device
        return self

    # ------------------------------------------------------------------ training
    def _batch(self, data: PairedData) -> Batch:
        if data.patch_size != self.patch or data.channels != self.channels:
            raise ConfigError(
                f"data has {data.patch_size}-px patches and {data.channels} channels; "
                f"this surrogate takes {self.patch} and {self.channels}"
            )
        assert self.norm is not None
        spectra = np.where(data.has_spectrum[:, None], data.spectra, 0.0)
        return Batch(
            torch.as_tensor(self._norm_patches(data.patches), device=self.device),
            torch.as_tensor(spectra / self.norm.spectrum_scale, dtype=torch.float32, device=self.device),
            torch.as_tensor(data.has_spectrum, device=self.device),
        )

    def _norm_patches(self, patches: NDArray) -> NDArray[np.float32]:
        assert self.norm is not None
        return ((np.asarray(patches, np.float32) - self.norm.patch_mean) / self.norm.patch_std).astype(np.float32)

    def fit(
        self,
        data: PairedData,
        steps: int,
        on_step: Callable[[int, float], None] | None = None,
        max_seconds: float | None = None,
    ) -> TrainReport:
        """Train from the initial weights for ``steps`` steps (or ``max_seconds``); fits the normaliser first."""
        self.norm = Normaliser.fit(data)
        return self._train(data, steps, max_seconds, on_step)

    def update(self, data: PairedData, max_steps: int = 50, max_seconds: float | None = None) -> TrainReport:
        """Warm-start on ``data`` for at most ``max_steps`` steps / ``max_seconds``; roll back on NaN or failure."""
        if self.norm is None:
            raise ConfigError("update() needs a fitted surrogate; call fit() first")
        return self._train(data, max_steps, max_seconds, None)

    def _train(
        self, data: PairedData, steps: int, max_seconds: float | None, on_step: Callable[[int, float], None] | None
    ) -> TrainReport:
        t0 = time.monotonic()
        deadline = None if max_seconds is None else t0 + max_seconds
        batch = self._batch(data)
        losses, terms, reason, rolled_back = with_rollback(
            self.net,
            self.optimizer,
            lambda: train_steps(
                self.net,
                self.optimizer,
                batch,
                max_steps=steps,
                batch_size=self.config.batch_size,
                generator=self.generator,
                deadline=deadline,
                on_step=on_step,
            ),
        )
        if not rolled_back:
            self.version += 1
        return TrainReport(losses, len(losses), time.monotonic() - t0, rolled_back, reason, self.version, terms)

    # ---------------------------------------------------------------- prediction
    @torch.no_grad()
    def predict_spectra(self, patches: NDArray, samples: int | None = None) -> tuple[NDArray, NDArray]:
        """im2spec: predictive mean and std ``(n, c)`` of the spectrum at each patch ``(n, p, p)``."""
        self._require("im2spec")
        self.net.eval()
        x = torch.as_tensor(self._norm_patches(patches), device=self.device)
        mu, logvar, _ = self.net.image_encoder(x)
        means, variances = [], []
        for _ in range(samples or self.config.samples):
            m, lv = self.net.spectrum_decoder(self.net.sample(mu, logvar, self.generator))
            means.append(m)
            variances.append(lv.exp())
        mean = torch.stack(means).mean(0)
        var = torch.stack(variances).mean(0) + torch.stack(means).var(0, unbiased=False)
        scale = self.norm.spectrum_scale if self.norm else 1.0
        return (mean * scale).cpu().numpy(), (var.sqrt() * scale * self.sigma_scale).cpu().numpy()

    @torch.no_grad()
    def sample_spectra(self, patches: NDArray, samples: int, *, decoder_noise: bool = True) -> NDArray[np.float32]:
        """im2spec draws: ``(s, n, c)`` spectra for each patch ``(n, p, p)``, in the spectra's units.

        Each draw decodes a sample of the image latent's posterior; with ``decoder_noise`` it adds
        the decoder's own Gaussian spread (scaled by the calibration factor), one normal draw per
        channel. Deterministic for a given ``seed`` and call order (the surrogate's generator).
        """
        self._require("im2spec")
        self.net.eval()
        assert self.norm is not None
        x = torch.as_tensor(self._norm_patches(patches), device=self.device)
        mu, logvar, _ = self.net.image_encoder(x)
        draws = []
        for _ in range(samples):
            mean, log_var = self.net.spectrum_decoder(self.net.sample(mu, logvar, self.generator))
            if decoder_noise:
                eps = torch.randn(mean.shape, generator=self.generator, device=self.device)
                mean = mean + eps * (0.5 * log_var).exp() * self.sigma_scale
            draws.append(mean)
        return np.asarray((torch.stack(draws) * self.norm.spectrum_scale).cpu().numpy(), dtype=np.float32)

    @torch.no_grad()
    def predict_patches(self, spectra: NDArray, samples: int | None = None) -> tuple[NDArray, NDArray]:
        """spec2im: mean and spread ``(n, p, p)`` of the patch for each spectrum ``(n, c)``."""
        self._require("spec2im")
        self.net.eval()
        assert self.norm is not None
        s = torch.as_tensor(np.asarray(spectra, np.float32) / self.norm.spectrum_scale, device=self.device)
        mu, logvar = self.net.spectrum_encoder(s)
        draws = torch.stack(
            [
                self.net.image_decoder(self.net.tie(self.net.sample(mu, logvar, self.generator)), None)
                for _ in range(samples or self.config.samples)
            ]
        )
        mean = draws.mean(0) * self.norm.patch_std + self.norm.patch_mean
        return mean.cpu().numpy(), (draws.std(0, unbiased=False) * self.norm.patch_std).cpu().numpy()

    @torch.no_grad()
    def image_latent(self, patches: NDArray) -> NDArray:
        """Posterior means of the image latent ``(n, d)`` (the joint latent the acquisition layer uses)."""
        self._require("image latent")
        self.net.eval()
        mu, _, _ = self.net.image_encoder(torch.as_tensor(self._norm_patches(patches), device=self.device))
        return np.asarray(mu.cpu().numpy())

    @torch.no_grad()
    def spectrum_latent(self, spectra: NDArray) -> NDArray:
        """Mapped posterior means ``W μ_s`` ``(n, d)`` of the spectrum latent, in the shared space."""
        self._require("spectrum latent")
        self.net.eval()
        assert self.norm is not None
        mu, _ = self.net.spectrum_encoder(
            torch.as_tensor(np.asarray(spectra, np.float32) / self.norm.spectrum_scale, device=self.device)
        )
        return np.asarray(self.net.tie(mu).cpu().numpy())

    @torch.no_grad()
    def decode_spectra(self, z: NDArray) -> NDArray:
        """Mean spectra ``(n, c)`` decoded from shared-latent points ``(n, d)``."""
        return self.decode_latent(z)[1]

    @torch.no_grad()
    def decode_latent(self, z: NDArray) -> tuple[NDArray, NDArray]:
        """Decode shared-latent points ``(n, d)`` to patches ``(n, p, p)`` and mean spectra ``(n, c)``."""
        if self.norm is None:
            raise ConfigError("the surrogate is not trained yet; call fit() first")
        self.net.eval()
        zt = torch.as_tensor(np.asarray(z, np.float32), device=self.device)
        patches = self.net.image_decoder(zt, None) * self.norm.patch_std + self.norm.patch_mean
        spectra, _ = self.net.spectrum_decoder(zt)
        return patches.cpu().numpy(), (spectra * self.norm.spectrum_scale).cpu().numpy()

    def _require(self, direction: str) -> None:
        if self.norm is None:
            raise ConfigError("the surrogate is not trained yet; call fit() first")
        able = {
            "im2spec": ("dualvae", "im2spec"),
            "spec2im": ("dualvae", "spec2im"),
            "image latent": ("dualvae", "im2spec", "imagevae"),
            "spectrum latent": ("dualvae", "spec2im", "specvae"),
        }[direction]
        if self.config.kind not in able:
            raise ConfigError(f"a {self.config.kind} surrogate cannot do {direction}; use one of {', '.join(able)}")

    # --------------------------------------------------------------- calibration
    def coverage(self, data: PairedData, level: float = 0.9) -> float:
        """Fraction of true spectrum values inside the central ``level`` interval on ``data``."""
        from scipy.stats import norm as normal

        z = float(normal.ppf(0.5 + level / 2))
        rows = data.has_spectrum
        mean, std = self.predict_spectra(data.patches[rows])
        return float(np.mean(np.abs(data.spectra[rows] - mean) <= z * std))

    def calibrate(self, data: PairedData) -> float:
        """Scale the predicted std so that 90 % intervals would cover 90 % on ``data``; returns the factor applied.

        The coverage on ``data`` itself is then 0.9 by construction: judge the calibration on other pairs
        (``engine.surrogate.evaluate_held_out`` fits it on one half of the held-out pairs and reports the
        coverage on the other).
        """
        rows = data.has_spectrum
        mean, std = self.predict_spectra(data.patches[rows])
        ratio = np.abs(data.spectra[rows] - mean) / np.maximum(std, 1e-12)
        factor = float(np.quantile(ratio, 0.9) / Z90)
        self.sigma_scale *= factor
        return factor

    # ---------------------------------------------------------------- checkpoints
    def to_state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """JSON metadata (config, normaliser, version) and the weights, for ``engine.checkpoints``."""
        if self.norm is None:
            raise ConfigError("nothing to save: the surrogate is not trained")
        meta = {
            "format": CHECKPOINT_FORMAT,
            "dualscope": __version__,
            "config": asdict(self.config),
            "patch": self.patch,
            "channels": self.channels,
            "seed": self.seed,
            "normaliser": asdict(self.norm),
            "sigma_scale": self.sigma_scale,
            "version": self.version,
        }
        return meta, self.net.state_dict()

    @classmethod
    def from_state(cls, meta: dict[str, Any], weights: dict[str, torch.Tensor], device: torch.device) -> Surrogate:
        """Inverse of ``to_state``; raises ``CheckpointError`` on a format or shape mismatch."""
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"checkpoint format {meta.get('format')!r}, expected {CHECKPOINT_FORMAT}")
        try:
            model = cls(
                SurrogateConfig(**meta["config"]), meta["patch"], meta["channels"], device=device, seed=meta["seed"]
            )
            model.net.load_state_dict(weights)
            model.norm = Normaliser(**meta["normaliser"])
        except (KeyError, TypeError, RuntimeError) as exc:
            raise CheckpointError(f"checkpoint does not match its config: {exc}") from exc
        model.sigma_scale, model.version = float(meta["sigma_scale"]), int(meta["version"])
        return model
