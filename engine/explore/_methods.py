"""Exploratory analysis of spectrum images: the lecture's strategies before im2spec and the dual VAE.

Band maps (with a power-law background before an edge), PCA and NMF (scikit-learn), an
unsupervised spectral VAE with a label map from clustering its latent, a labelling classifier
trained on a few labelled positions, and the separated-VAE baseline (an image VAE and a spectrum
VAE trained apart, tied afterwards by a least-squares linear map). Pure compute: arrays in, arrays out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from sklearn.cluster import KMeans
from sklearn.decomposition import NMF, PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from engine.errors import ConfigError
from engine.surrogate import PairedData, Surrogate, SurrogateConfig


def band_map(
    spectra: NDArray,
    axis: NDArray[np.float64],
    window: tuple[float, float],
    background_window: tuple[float, float] | None = None,
) -> NDArray[np.float64]:
    """Integral ``(m,)`` of each spectrum ``(m, c)`` over ``window`` (channel sums), minus an optional background.

    With ``background_window`` (before an edge, core-loss EELS) a power law ``A E^-r`` is fitted to
    each spectrum there (least squares on ``log I`` vs ``log E``) and its extrapolation subtracted in
    the band.

    Args:
        spectra: spectra ``(m, c)``.
        axis: the spectral axis values ``(c,)``.
        window: ``(low, high)`` in the axis' units.
        background_window: ``(low, high)`` before the band for the power-law background (None: none).

    Returns:
        The band's integral per spectrum ``(m,)``, counts.

    Raises:
        ConfigError: a window that holds no channel, or a background window without enough positive channels.

    Examples:
        >>> values = band_map(spectra, axis, (0.8, 1.2))
        >>> values.shape, bool(np.corrcoef(values, mix[:, 0])[0, 1] > 0.9)
        ((40,), True)
    """
    x = np.asarray(spectra, np.float64)
    band = (axis >= min(window)) & (axis <= max(window))
    if not band.any():
        raise ConfigError(f"band {window} holds no channel of the axis [{axis.min():g}, {axis.max():g}]")
    if background_window is None:
        return np.asarray(x[:, band].sum(axis=1), dtype=np.float64)
    fit = (axis >= min(background_window)) & (axis <= max(background_window))
    if fit.sum() < 2 or np.any(axis[fit] <= 0) or np.any(axis[band] <= 0):
        raise ConfigError("the power-law background needs >= 2 channels at positive energies before the band")
    log_e = np.log(axis[fit])
    log_i = np.log(np.clip(x[:, fit], 1e-12, None))
    design = np.column_stack([np.ones_like(log_e), log_e])
    coef, *_ = np.linalg.lstsq(design, log_i.T, rcond=None)  # (2, m): log A, -r
    background = np.exp(coef[0][:, None] + coef[1][:, None] * np.log(axis[band])[None, :])
    return np.asarray((x[:, band] - background).sum(axis=1))


@dataclass(frozen=True)
class Decomposition:
    """Components ``(k, c)``, per-position weights ``(m, k)``, and how well they reconstruct the data.

    Attributes:
        method: ``pca`` or ``nmf``.
        components: component spectra ``(k, c)``.
        weights: weight of each component at each position ``(m, k)``.
        explained_variance_ratio: per component (PCA: all of them, for the scree plot).
        reconstruction_error: Frobenius norm of the residual.
        notes: what was assumed (a shift of negative data for NMF).

    Examples:
        >>> d = pca(spectra, n_components=2)
        >>> d.components.shape, d.weights.shape, bool(d.explained_variance_ratio[:2].sum() > 0.9)
        ((2, 32), (40, 2), True)
    """

    method: str
    components: NDArray[np.float64]
    weights: NDArray[np.float64]
    explained_variance_ratio: NDArray[np.float64]
    reconstruction_error: float
    """Relative Frobenius error ``‖X − X̂‖ / ‖X‖`` of the reconstruction."""
    notes: tuple[str, ...] = ()


def pca(spectra: NDArray, n_components: int | None = None, variance: float = 0.95, seed: int = 0) -> Decomposition:
    """PCA of ``spectra (m, c)``: ``n_components`` or as many as explain ``variance`` of it.

    Args:
        spectra: spectra ``(m, c)``.
        n_components: components to keep (None: chosen by ``variance``).
        variance: the fraction of the variance to explain when ``n_components`` is None.
        seed: seeds the randomised solver.

    Returns:
        Components ``(k, c)``, weights ``(m, k)``, explained variance ratios and reconstruction error.

    Examples:
        >>> d = pca(spectra)  # as many components as explain 95 % of the variance
        >>> d.method, d.components.shape[1], d.weights.shape[0]
        ('pca', 32, 40)
    """
    x = np.asarray(spectra, np.float64)
    full = PCA(random_state=seed).fit(x)
    k = n_components or int(np.searchsorted(np.cumsum(full.explained_variance_ratio_), variance) + 1)
    k = max(1, min(k, min(x.shape)))
    model = PCA(n_components=k, random_state=seed).fit(x)
    weights = model.transform(x)
    recon = model.inverse_transform(weights)
    err = float(np.linalg.norm(x - recon) / np.linalg.norm(x))
    return Decomposition("pca", model.components_, weights, full.explained_variance_ratio_, err)


def nmf(spectra: NDArray, n_components: int, seed: int = 0) -> Decomposition:
    """NMF of ``spectra (m, c)`` into non-negative components and abundances (negative data are shifted).

    Args:
        spectra: spectra ``(m, c)``.
        n_components: components.
        seed: seeds the initialisation.

    Returns:
        Non-negative components ``(k, c)`` and abundances ``(m, k)``.

    Examples:
        >>> d = nmf(spectra, 2)
        >>> d.components.shape, bool((d.weights >= 0).all())
        ((2, 32), True)
    """
    x = np.asarray(spectra, np.float64)
    notes: tuple[str, ...] = ()
    shift = 0.0
    if x.min() < 0:
        shift = -float(x.min())
        notes = (f"the data have negative values: NMF ran on data + {shift:.4g}",)
    model = NMF(n_components=n_components, init="nndsvda", max_iter=1000, random_state=seed)
    weights = model.fit_transform(x + shift)
    recon = weights @ model.components_ - shift
    err = float(np.linalg.norm(x - recon) / np.linalg.norm(x))
    return Decomposition("nmf", model.components_, weights, np.zeros(0), err, notes)


@dataclass(frozen=True)
class LatentLabels:
    """A spectral VAE's latent ``(m, d)`` and the cluster label of each position ``(m,)``.

    Attributes:
        latent: the latent means ``(m, d)``.
        labels: the k-means cluster of each position ``(m,)``.

    Examples:
        >>> result = spectral_vae_labels(spectra, n_clusters=3, steps=20)
        >>> result.labels.shape
        (40,)
    """

    latent: NDArray[np.float64]
    labels: NDArray[np.int64]


def spectral_vae_labels(
    spectra: NDArray, n_clusters: int = 4, latent: int = 2, steps: int = 600, seed: int = 0, patch: int = 8
) -> LatentLabels:
    """Train a VAE on the spectra alone; cluster its latent means with k-means (the "AE labels").

    Args:
        spectra: spectra ``(m, c)``.
        n_clusters: k-means clusters.
        latent: latent dimension.
        steps: training steps.
        seed: seeds the VAE and k-means.
        patch: side of the placeholder patches the network needs (unused for spectra).

    Returns:
        The latent means ``(m, latent)`` and a cluster label per position ``(m,)``.

    Examples:
        >>> result = spectral_vae_labels(spectra, n_clusters=2, steps=20)
        >>> result.latent.shape, sorted(set(result.labels.tolist()))
        ((40, 2), [0, 1])
    """
    x = np.asarray(spectra, np.float32)
    data = PairedData.paired(np.zeros((x.shape[0], patch, patch), np.float32), x)
    model = Surrogate(
        SurrogateConfig(kind="specvae", latent=latent, batch_size=64),
        patch,
        x.shape[1],
        device=torch.device("cpu"),
        seed=seed,
    )
    model.fit(data, steps)
    z = model.spectrum_latent(x)
    labels = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit_predict(z)
    return LatentLabels(z.astype(np.float64), labels.astype(np.int64))


@dataclass(frozen=True)
class Labelling:
    """A patch → label classifier trained on a few labelled positions.

    Attributes:
        predicted: label at every position ``(m,)``.
        train_index, test_index: the labelled positions used to train and to score (disjoint).
        held_out_accuracy: accuracy on ``test_index`` only.
        ambiguous: pairs of labelled positions with near-identical patches but different labels.

    Examples:
        >>> patches = np.concatenate([np.zeros((20, 8, 8)), np.ones((20, 8, 8))])
        >>> labelled = np.arange(0, 40, 2)
        >>> result = label_map(patches, labelled, (labelled >= 20).astype(np.int64))
        >>> len(result.train_index) + len(result.test_index) == len(labelled)
        True
    """

    predicted: NDArray[np.int64]
    train_index: NDArray[np.int64]
    test_index: NDArray[np.int64]
    held_out_accuracy: float
    ambiguous: list[tuple[int, int]]


def label_map(
    patches: NDArray, labelled: NDArray[np.int64], labels: NDArray[np.int64], holdout: float = 0.3, seed: int = 0
) -> Labelling:
    """Fit a classifier on ``labelled`` positions' patches, score it on held-out labelled ones, predict all.

    Args:
        patches: structure patches of every position ``(m, p, p)``.
        labelled: indices of the labelled positions ``(k,)``.
        labels: their labels ``(k,)``.
        holdout: fraction of the labelled positions held out for scoring.
        seed: seeds the split and the classifier.

    Returns:
        A label for every position, the split, the held-out accuracy and ambiguous labelled pairs.

    Raises:
        ConfigError: fewer than 4 labelled positions.

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> patches = np.concatenate([np.zeros((20, 8, 8)), np.ones((20, 8, 8))]) + 0.1 * rng.random((40, 8, 8))
        >>> labelled = np.arange(0, 40, 2)  # every other patch is labelled: 0 dark, 1 bright
        >>> result = label_map(patches, labelled, (labelled >= 20).astype(np.int64))
        >>> result.predicted.shape, result.held_out_accuracy
        ((40,), 1.0)
    """
    if labelled.size != labels.size or labelled.size < 4:
        raise ConfigError("need at least 4 labelled positions, one label each")
    rng = np.random.default_rng(seed)
    order = rng.permutation(labelled.size)
    k = max(1, round(holdout * labelled.size))
    test, train = order[:k], order[k:]
    flat = np.asarray(patches, np.float64).reshape(len(patches), -1)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    clf.fit(flat[labelled[train]], labels[train])
    accuracy = float(np.mean(clf.predict(flat[labelled[test]]) == labels[test]))
    feats = flat[labelled]
    d = np.linalg.norm(feats[:, None] - feats[None], axis=-1)
    near = d < 0.05 * np.median(d[d > 0]) if np.any(d > 0) else np.zeros_like(d, bool)
    ambiguous = [
        (int(labelled[i]), int(labelled[j]))
        for i, j in zip(*np.nonzero(np.triu(near, 1)), strict=True)
        if labels[i] != labels[j]
    ]
    return Labelling(clf.predict(flat).astype(np.int64), labelled[train], labelled[test], accuracy, ambiguous)


@dataclass(frozen=True)
class SeparatedVAEs:
    """Two VAEs trained apart and a least-squares map from the image latent to the spectrum latent.

    Attributes:
        image: the image VAE.
        spectrum: the spectrum VAE.
        map_weights: ``[z_image, 1] @ map_weights = z_spectrum``, ``(d + 1, d)``.

    Examples:
        >>> from engine.surrogate import PairedData
        >>> rng = np.random.default_rng(0)
        >>> data = PairedData.paired(rng.random((24, 8, 8)), rng.random((24, 6)))
        >>> separated_vaes(data, latent=2, steps=10).spectrum_latent(data.spectra[:2]).shape
        (2, 2)
    """

    image: Surrogate
    spectrum: Surrogate
    map_weights: NDArray[np.float64]  # (d + 1, d): [z_i, 1] @ map = z_s

    def predict_spectra(self, patches: NDArray) -> NDArray:
        """im2spec through the post-hoc map: patches ``(n, p, p)`` → spectra ``(n, c)``."""
        z = self.image.image_latent(patches)
        return self.spectrum.decode_spectra(np.column_stack([z, np.ones(len(z))]) @ self.map_weights)

    def spectrum_latent(self, spectra: NDArray) -> NDArray:
        """The spectrum VAE's latent ``(n, d)``."""
        return self.spectrum.spectrum_latent(spectra)


def separated_vaes(
    train: PairedData, latent: int = 8, steps: int = 1000, seed: int = 0, max_seconds: float | None = None
) -> SeparatedVAEs:
    """Train an image VAE and a spectrum VAE independently on ``train``, then fit the linear map between latents.

    Args:
        train: paired patches ``(n, p, p)`` and spectra ``(n, c)``.
        latent: latent dimension of both VAEs.
        steps: training steps of each.
        seed: seeds both.
        max_seconds: a time limit per VAE, s (None: none).

    Returns:
        The two VAEs and the least-squares map ``(latent + 1, latent)`` between their latents.

    Examples:
        >>> from engine.surrogate import PairedData
        >>> rng = np.random.default_rng(0)
        >>> data = PairedData.paired(rng.random((24, 8, 8)), rng.random((24, 6)))
        >>> vaes = separated_vaes(data, latent=2, steps=10)
        >>> vaes.predict_spectra(data.patches[:3]).shape, vaes.map_weights.shape
        ((3, 6), (3, 2))
    """
    cpu = torch.device("cpu")
    image = Surrogate(
        SurrogateConfig(kind="imagevae", latent=latent), train.patch_size, train.channels, device=cpu, seed=seed
    )
    spectrum = Surrogate(
        SurrogateConfig(kind="specvae", latent=latent), train.patch_size, train.channels, device=cpu, seed=seed + 1
    )
    half = None if max_seconds is None else max_seconds / 2
    image.fit(train, steps, max_seconds=half)
    spectrum.fit(train, steps, max_seconds=half)
    rows = train.has_spectrum
    zi = image.image_latent(train.patches[rows])
    zs = spectrum.spectrum_latent(train.spectra[rows])
    weights, *_ = np.linalg.lstsq(np.column_stack([zi, np.ones(len(zi))]), zs, rcond=None)
    return SeparatedVAEs(image, spectrum, weights)


@dataclass(frozen=True)
class DualVsSeparated:
    """im2spec on one held-out split for the dual VAE and the separated VAEs (same rows for both).

    Attributes:
        train_index: rows trained on ``(n_train,)``.
        test_index: rows held out ``(n_test,)``.
        dual_r2: held-out im2spec R² of the dual VAE.
        separated_r2: held-out im2spec R² of the separated VAEs.

    Examples:
        >>> result = DualVsSeparated(np.arange(24), np.arange(24, 30), dual_r2=0.8, separated_r2=0.6)
        >>> result.dual_r2 > result.separated_r2  # the tie between the latents helped on held-out pairs
        True
    """

    train_index: NDArray[np.int64]
    test_index: NDArray[np.int64]
    dual_r2: float
    separated_r2: float


def r2_score(y: NDArray, pred: NDArray) -> float:
    """Spectral R² over all values (per-channel means as the baseline).

    Args:
        y: true values ``(n, c)``.
        pred: predictions ``(n, c)``.

    Returns:
        ``1 − SS_res / SS_tot``; 1 is perfect, 0 is no better than the per-channel means.

    Examples:
        >>> y = np.array([[1.0, 2.0], [3.0, 4.0]])
        >>> r2_score(y, y), r2_score(y, np.array([[2.0, 3.0], [2.0, 3.0]]))  # the per-channel means score 0
        (1.0, 0.0)
    """
    y = np.asarray(y, np.float64)
    return float(1 - ((y - pred) ** 2).sum() / max(((y - y.mean(axis=0)) ** 2).sum(), 1e-300))


def dual_vs_separated(
    data: PairedData, holdout: float = 0.2, steps: int = 600, seed: int = 0, latent: int = 8
) -> DualVsSeparated:
    """Train the dual VAE and the separated VAEs on the same split of ``data``; compare held-out im2spec R².

    Args:
        data: paired patches ``(n, p, p)`` and spectra ``(n, c)``; with ``positions`` whole tiles of
            the field are held out (``PairedData.split_index``).
        holdout: fraction held out, in (0, 1).
        steps: training steps of each model.
        seed: seeds the split and the models.
        latent: latent dimension.

    Returns:
        The split and the held-out im2spec R² of both.

    Examples:
        >>> from engine.surrogate import PairedData
        >>> rng = np.random.default_rng(0)
        >>> data = PairedData.paired(rng.random((30, 8, 8)), rng.random((30, 6)))
        >>> result = dual_vs_separated(data, steps=10, latent=2)
        >>> len(result.test_index), bool(np.isfinite([result.dual_r2, result.separated_r2]).all())
        (6, True)
    """
    train, test = data.split_index(holdout, np.random.default_rng(seed))  # blocked when positions are known
    tr, te = data.subset(train), data.subset(test)
    dual = Surrogate(
        SurrogateConfig(latent=latent), data.patch_size, data.channels, device=torch.device("cpu"), seed=seed
    )
    dual.fit(tr, steps)
    sep = separated_vaes(tr, latent=latent, steps=steps, seed=seed)
    return DualVsSeparated(
        train.astype(np.int64),
        test.astype(np.int64),
        r2_score(te.spectra, dual.predict_spectra(te.patches)[0]),
        r2_score(te.spectra, sep.predict_spectra(te.patches)),
    )
