"""The networks and losses: image VAE, spectrum VAE, the linear tie, and their combinations.

One module serves the three surrogates (``kind``):

* ``"im2spec"``: image encoder → shared latent → spectrum decoder, trained on paired rows with the
  spectrum's Gaussian negative log-likelihood plus ``beta`` × KL.
* ``"spec2im"``: spectrum encoder → linear map → shared latent → image decoder.
* ``"imagevae"`` / ``"specvae"``: one VAE on patches or on spectra alone (the separated-VAE
  baseline and the unsupervised spectral VAE of exploratory analysis).
* ``"dualvae"``: both VAEs trained together. The image VAE reconstructs every patch (paired or
  not); the spectrum VAE reconstructs every measured spectrum from ``W z_s`` (``W`` a learnable
  linear map into the shared latent space); an L1 similarity ``gamma × |μ_i − W μ_s|`` ties the two
  latent means; ``cross`` weighs the cross reconstructions (spectrum from the image latent, patch
  from the mapped spectrum latent) that make im2spec and spec2im predictive.

The image VAE can be made invariant to rotation and translation of the patch (``invariant``): the
encoder also outputs an angle and an offset, which rotate and shift the coordinate grid fed to a
spatial decoder, so the content latent need not encode them.

Shapes: patches ``(B, p, p)``, spectra ``(B, c)``, latents ``(B, d)``. The spectrum decoder outputs a
mean and a log-variance per channel (heteroscedastic noise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional

from engine.errors import ConfigError

KINDS = ("dualvae", "im2spec", "spec2im", "imagevae", "specvae")
"""Surrogate kinds; ``imagevae`` and ``specvae`` are the single-modality VAEs of the separated-VAE baseline."""


@dataclass(frozen=True)
class NetConfig:
    """Architecture and loss weights.

    Attributes:
        kind: ``dualvae``, ``im2spec`` or ``spec2im``.
        patch: patch side ``p`` (a multiple of 8).
        channels: spectral channels ``c``.
        latent: shared latent dimension ``d``.
        beta: KL weight.
        gamma: weight of the L1 tie between the latents (dual VAE).
        cross: weight of the cross reconstructions (dual VAE).
        invariant: rotation/translation-invariant image VAE.
        width: base number of convolution filters.
    """

    kind: str = "dualvae"
    patch: int = 32
    channels: int = 512
    latent: int = 8
    beta: float = 0.01
    gamma: float = 1.0
    cross: float = 1.0
    invariant: bool = False
    width: int = 8

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown surrogate kind {self.kind!r}; choose {', '.join(KINDS)}")
        if self.patch % 8 or self.patch < 8:
            raise ConfigError(f"patch size {self.patch} must be a multiple of 8 (>= 8)")


class ImageEncoder(nn.Module):
    """Patch ``(B, p, p)`` → latent mean and log-variance ``(B, d)`` (+ angle and offset if invariant)."""

    def __init__(self, cfg: NetConfig):
        super().__init__()
        w = cfg.width
        self.conv = nn.Sequential(
            nn.Conv2d(1, w, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.SiLU(),
        )  # fmt: skip
        feat = 4 * w * (cfg.patch // 8) ** 2
        self.extra = 3 if cfg.invariant else 0
        self.head = nn.Sequential(nn.Linear(feat, 128), nn.SiLU(), nn.Linear(128, 2 * cfg.latent + self.extra))
        self.latent = cfg.latent

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Return ``(mu, logvar, pose)``; ``pose (B, 3)`` = angle, dx, dy when invariant."""
        h = self.head(self.conv(x[:, None]).flatten(1))
        mu, logvar = h[:, : self.latent], h[:, self.latent : 2 * self.latent].clamp(-10, 6)
        pose = h[:, 2 * self.latent :] if self.extra else None
        return mu, logvar, pose


class ImageDecoder(nn.Module):
    """Latent ``(B, d)`` → patch ``(B, p, p)`` with transposed convolutions."""

    def __init__(self, cfg: NetConfig):
        super().__init__()
        w, self.s = cfg.width, cfg.patch // 8
        self.fc = nn.Sequential(
            nn.Linear(cfg.latent, 128), nn.SiLU(), nn.Linear(128, 4 * w * self.s * self.s), nn.SiLU()
        )
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(4 * w, 2 * w, 4, stride=2, padding=1), nn.SiLU(),
            nn.ConvTranspose2d(2 * w, w, 4, stride=2, padding=1), nn.SiLU(),
            nn.ConvTranspose2d(w, 1, 4, stride=2, padding=1),
        )  # fmt: skip
        self.w = w

    def forward(self, z: Tensor, pose: Tensor | None = None) -> Tensor:
        """Decode; ``pose`` is ignored (this decoder is not invariant)."""
        h = self.fc(z).view(-1, 4 * self.w, self.s, self.s)
        out: Tensor = self.deconv(h)[:, 0]
        return out


class CoordinateDecoder(nn.Module):
    """Latent ``(B, d)`` and pose ``(B, 3)`` → patch, decoding each pixel from its rotated, shifted coordinates.

    The pose rotates the grid by the angle and shifts it by the offset (in patch half-widths), so
    rotated or shifted copies of one structure share their content latent (as in the rotationally
    invariant VAE of Ziatdinov and Kalinin).
    """

    def __init__(self, cfg: NetConfig):
        super().__init__()
        p = cfg.patch
        lin = torch.linspace(-1, 1, p)
        yy, xx = torch.meshgrid(lin, lin, indexing="ij")
        self.coords: Tensor
        self.register_buffer("coords", torch.stack([xx, yy], dim=-1).view(1, p * p, 2))
        self.net = nn.Sequential(
            nn.Linear(cfg.latent + 2, 128), nn.SiLU(), nn.Linear(128, 128), nn.SiLU(), nn.Linear(128, 1)
        )  # fmt: skip
        self.p = p

    def forward(self, z: Tensor, pose: Tensor | None = None) -> Tensor:
        """Decode; without ``pose`` the grid is neither rotated nor shifted."""
        b = z.shape[0]
        grid: Tensor = self.coords.expand(b, -1, -1)
        if pose is not None:
            angle, shift = pose[:, 0], pose[:, 1:].tanh() * 0.5
            cos, sin = angle.cos()[:, None, None], angle.sin()[:, None, None]
            rot = torch.cat([cos, -sin, sin, cos], dim=2).view(b, 2, 2)
            grid = grid @ rot.transpose(1, 2) + shift[:, None, :]
        zz = z[:, None, :].expand(-1, self.p * self.p, -1)
        out: Tensor = self.net(torch.cat([grid, zz], dim=-1)).view(b, self.p, self.p)
        return out


class SpectrumEncoder(nn.Module):
    """Spectrum ``(B, c)`` → latent mean and log-variance ``(B, d)``."""

    def __init__(self, cfg: NetConfig):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(cfg.channels, 256), nn.SiLU(), nn.Linear(256, 128), nn.SiLU(), nn.Linear(128, 2 * cfg.latent)
        )
        self.latent = cfg.latent

    def forward(self, s: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(mu, logvar)``."""
        h = self.net(s)
        return h[:, : self.latent], h[:, self.latent :].clamp(-10, 6)


class SpectrumDecoder(nn.Module):
    """Shared latent ``(B, d)`` → spectrum mean and log-variance ``(B, c)``."""

    def __init__(self, cfg: NetConfig):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(cfg.latent, 128), nn.SiLU(), nn.Linear(128, 256), nn.SiLU())
        self.mean = nn.Linear(256, cfg.channels)
        self.logvar = nn.Linear(256, cfg.channels)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(mean, logvar)``; the log-variance is clamped to [-12, 4]."""
        h = self.body(z)
        return self.mean(h), self.logvar(h).clamp(-12, 4)


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """Mean over the batch of KL(N(mu, e^logvar) ‖ N(0, I))."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(dim=1).mean()


def gaussian_nll(x: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
    """Mean per-row Gaussian negative log-likelihood, summed over channels."""
    return 0.5 * ((x - mean).pow(2) * (-logvar).exp() + logvar + math.log(2 * math.pi)).sum(dim=1).mean()


class DualModel(nn.Module):
    """The networks of all three surrogate kinds (see the module docstring)."""

    def __init__(self, cfg: NetConfig):
        super().__init__()
        self.cfg = cfg
        self.image_encoder = ImageEncoder(cfg)
        self.image_decoder: nn.Module = CoordinateDecoder(cfg) if cfg.invariant else ImageDecoder(cfg)
        self.spectrum_encoder = SpectrumEncoder(cfg)
        self.spectrum_decoder = SpectrumDecoder(cfg)
        self.tie = nn.Linear(cfg.latent, cfg.latent, bias=False)  # W: spectrum latent → shared space
        nn.init.eye_(self.tie.weight)

    @staticmethod
    def sample(mu: Tensor, logvar: Tensor, generator: torch.Generator | None) -> Tensor:
        """Reparameterised sample ``mu + σ ε`` with noise from ``generator``."""
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + (0.5 * logvar).exp() * eps

    def loss(
        self, patches: Tensor, spectra: Tensor, has_spectrum: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, dict[str, float]]:
        """Training loss of one batch and its terms (for the loss curve)."""
        cfg = self.cfg
        terms: dict[str, float] = {}
        paired = has_spectrum.nonzero().flatten()
        total = patches.new_zeros(())
        if cfg.kind == "imagevae":
            mu_i, lv_i, pose = self.image_encoder(patches)
            rec = functional.mse_loss(
                self.image_decoder(self.sample(mu_i, lv_i, generator), pose), patches, reduction="none"
            )
            kl = kl_divergence(mu_i, lv_i)
            total = rec.sum(dim=(1, 2)).mean() + cfg.beta * kl
            terms.update(
                image=float(rec.detach().sum(dim=(1, 2)).mean()),
                kl_image=float(kl.detach()),
                total=float(total.detach()),
            )
            return total, terms
        if cfg.kind == "specvae":
            s = spectra[paired]
            mu_s, lv_s = self.spectrum_encoder(s)
            m, lv = self.spectrum_decoder(self.tie(self.sample(mu_s, lv_s, generator)))
            nll, kl = gaussian_nll(s, m, lv), kl_divergence(mu_s, lv_s)
            total = nll + cfg.beta * kl
            terms.update(spectrum=float(nll.detach()), kl_spectrum=float(kl.detach()), total=float(total.detach()))
            return total, terms
        if cfg.kind in ("dualvae", "im2spec"):
            mu_i, lv_i, pose = self.image_encoder(patches)
            z_i = self.sample(mu_i, lv_i, generator)
            kl_i = kl_divergence(mu_i, lv_i)
            total = total + cfg.beta * kl_i
            terms["kl_image"] = float(kl_i.detach())
            if cfg.kind == "dualvae":
                rec_i = (
                    functional.mse_loss(self.image_decoder(z_i, pose), patches, reduction="none").sum(dim=(1, 2)).mean()
                )
                total = total + rec_i
                terms["image"] = float(rec_i.detach())
            if paired.numel():
                m, lv = self.spectrum_decoder(z_i[paired])
                weight = cfg.cross if cfg.kind == "dualvae" else 1.0
                nll = gaussian_nll(spectra[paired], m, lv)
                total = total + weight * nll
                terms["im2spec"] = float(nll.detach())
        if cfg.kind in ("dualvae", "spec2im") and paired.numel():
            s = spectra[paired]
            mu_s, lv_s = self.spectrum_encoder(s)
            z_s = self.tie(self.sample(mu_s, lv_s, generator))
            kl_s = kl_divergence(mu_s, lv_s)
            total = total + cfg.beta * kl_s
            terms["kl_spectrum"] = float(kl_s.detach())
            target = patches[paired]
            rec_cross = (
                functional.mse_loss(self.image_decoder(z_s, None), target, reduction="none").sum(dim=(1, 2)).mean()
            )
            if cfg.kind == "dualvae":
                m, lv = self.spectrum_decoder(z_s)
                nll = gaussian_nll(s, m, lv)
                tie = (mu_i[paired] - self.tie(mu_s)).abs().sum(dim=1).mean()
                total = total + nll + cfg.gamma * tie + cfg.cross * rec_cross
                terms.update(spectrum=float(nll.detach()), tie=float(tie.detach()), spec2im=float(rec_cross.detach()))
            else:
                total = total + rec_cross
                terms["spec2im"] = float(rec_cross.detach())
        terms["total"] = float(total.detach())
        return total, terms
