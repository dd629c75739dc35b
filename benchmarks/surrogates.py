"""Surrogate quality and speed on held-out data, against simple baselines on the same split.

* Dark-field cluster twin (noisy): 5,000 training pairs of 32×32 SEM patches and 512-channel
  spectra, 1,000 held out. im2spec R² and relative error vs k-nearest neighbours on patch pixels and
  PCA + ridge; particle-number classification (1, 2, 3) from the spectrum alone through the shared
  latent (standardised logistic regression on ``W μ_s``), beside the published dual-VAE numbers on real
  dark-field data (0.96 / 0.86 / 0.58: different data, shown side by side); training time; the time
  of one ``update`` on 1,000 pairs.
* STEM-EELS twin: patches of the HAADF image and EELS at 1,600 probe positions (1,200 train).
* ``fei_emd_si.emd`` (real, tiny): 16 × 16 HAADF pixels and their EDS spectra (4096 channels
  binned to 256), 8×8-pixel patches; needs the optional ``formats`` extra (rosettasciio).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import zarr
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GridSearchCV, GroupKFold, KFold
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from benchmarks.common import Record, machine
from engine.candidates import CandidateSet
from engine.clock import SystemClock
from engine.explore import separated_vaes
from engine.surrogate import PairedData, Surrogate, SurrogateConfig, extract_patches
from simulators.darkfield import DarkFieldOptions
from simulators.darkfield_dataset import write_darkfield_dataset
from simulators.stem_twin import StemTwinOptions, stem_twin

CPU = torch.device("cpu")
PUBLISHED = {1: 0.96, 2: 0.86, 3: 0.58}
GOALS = {1: 0.98, 2: 0.93, 3: 0.80}


def r2_and_relative_error(y: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """Spectral R² over all held-out values and the median relative L2 error per spectrum."""
    r2 = 1 - ((y - pred) ** 2).sum() / ((y - y.mean(axis=0)) ** 2).sum()
    rel = np.linalg.norm(y - pred, axis=1) / np.maximum(np.linalg.norm(y, axis=1), 1e-12)
    return float(r2), float(np.median(rel))


def baselines(train: PairedData, test: PairedData) -> dict[str, np.ndarray]:
    """kNN on patch pixels and PCA + ridge, tuned by 5-fold cross-validation on ``train`` only (as a user
    would: k; components and alpha), then refitted on all of ``train`` and predicting ``test`` spectra.

    When the pairs share one image the folds are whole tiles of the field, as the train/test split is.
    """
    xtr, xte = train.patches.reshape(len(train), -1), test.patches.reshape(len(test), -1)
    groups = train.tiles(5)
    folds = GroupKFold(n_splits=5) if groups is not None else KFold(n_splits=5, shuffle=True, random_state=0)
    ks = [k for k in (1, 3, 5, 10, 20, 40) if k < 0.8 * len(train)]
    knn = GridSearchCV(KNeighborsRegressor(), {"n_neighbors": ks}, cv=folds, scoring="r2")
    components = [c for c in (5, 10, 20, 40) if c < 0.8 * len(train)]
    pca_ridge = GridSearchCV(
        make_pipeline(PCA(random_state=0), Ridge()),
        {"pca__n_components": components, "ridge__alpha": [0.01, 0.1, 1.0, 10.0, 100.0]},
        cv=folds,
        scoring="r2",
    )
    knn.fit(xtr, train.spectra, groups=groups)
    pca_ridge.fit(xtr, train.spectra, groups=groups)
    k = knn.best_params_["n_neighbors"]
    c, a = pca_ridge.best_params_["pca__n_components"], pca_ridge.best_params_["ridge__alpha"]
    return {
        f"kNN on patch pixels (k = {k}, by CV)": knn.predict(xte),
        f"PCA + ridge ({c} components, alpha {a:g}, by CV)": pca_ridge.predict(xte),
    }


def im2spec_records(name: str, model: Surrogate, train: PairedData, test: PairedData) -> list[Record]:
    m = machine()
    pred, _ = model.predict_spectra(test.patches)
    r2, rel = r2_and_relative_error(test.spectra, pred)
    out = []
    for base_name, base_pred in baselines(train, test).items():
        b_r2, b_rel = r2_and_relative_error(test.spectra, base_pred)
        out.append(
            Record(
                "surrogates",
                f"{name}: im2spec R² (held out)",
                r2,
                "",
                base_name,
                b_r2,
                r2 / b_r2 if b_r2 > 0 else float("nan"),
                "",
                m,
            )
        )
        out.append(
            Record(
                "surrogates",
                f"{name}: im2spec median relative error",
                rel,
                "",
                base_name,
                b_rel,
                rel / b_rel,
                "ratio <= 1",
                m,
            )
        )
    calibrate_on, judge_on = test.subset(np.arange(0, len(test), 2)), test.subset(np.arange(1, len(test), 2))
    before = model.coverage(judge_on)
    model.calibrate(calibrate_on)  # on one half of the held-out pairs ...
    after = model.coverage(judge_on)  # ... judged on the other half (on the same half it is 0.9 by construction)
    out.append(
        Record(
            "surrogates",
            f"{name}: 90% interval coverage on held-out pairs not used to calibrate (before / after)",
            after,
            "",
            "before calibration",
            before,
            after / before,
            "",
            m,
        )
    )
    return out


def latent_classes(latent: Callable[[np.ndarray], np.ndarray], train: PairedData, test: PairedData) -> np.ndarray:
    """Particle numbers of ``test`` predicted from the spectrum latent by a classifier fitted on ``train``."""
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=10.0, max_iter=5000))
    clf.fit(latent(train.spectra), train.labels)
    return np.asarray(clf.predict(latent(test.spectra)))


TRAIN_STEPS = 2000
"""The dark-field dual VAE's training work: about what the old 55 s budget bought on the 2-core VM (29 ms/step)."""


def darkfield(workdir: Path) -> list[Record]:
    m = machine()
    options = DarkFieldOptions(patch_pixels=32, n_channels=512, patch_nm=300, max_particles=3, seed=11)
    path = write_darkfield_dataset(workdir / "df.zarr", 6000, options, workers=2)
    g = zarr.open_group(path, mode="r")
    data = PairedData.paired(np.asarray(g["images"][:]), np.asarray(g["spectra"][:]), np.asarray(g["labels"][:]))
    train, test = data.subset(np.arange(5000)), data.subset(np.arange(5000, 6000))
    model = Surrogate(SurrogateConfig(), 32, 512, device=CPU, seed=0)
    # fixed work, timed: the goal can fail (it was "train for at most 55 s", which met a 60 s goal by construction)
    report = model.fit(train, TRAIN_STEPS)
    records = [
        Record(
            "surrogates",
            f"dark-field: dual-VAE training, 5,000 pairs, {report.steps} steps (fixed work)",
            report.wall_s,
            "s",
            "",
            float("nan"),
            float("nan"),
            "value <= 60",
            m,
        )
    ]
    records += im2spec_records("dark-field", model, train, test)
    predicted = latent_classes(model.spectrum_latent, train, test)
    assert test.labels is not None
    for k in (1, 2, 3):
        acc = float(np.mean(predicted[test.labels == k] == k))
        records.append(
            Record(
                "surrogates",
                f"dark-field: {k}-particle accuracy from the spectrum via the latent",
                acc,
                "",
                "published dual VAE, real data",
                PUBLISHED[k],
                acc / PUBLISHED[k],
                f"value >= {GOALS[k]}",
                m,
            )
        )
    records += separated_records(train, test, model, predicted)
    small = train.subset(np.arange(1000))
    times = [model.update(small, max_steps=5).wall_s for _ in range(5)]
    records.append(
        Record(
            "surrogates",
            "update on 1,000 pairs (5 warm-start steps)",
            float(np.median(times)) * 1e3,
            "ms",
            "",
            float("nan"),
            float("nan"),
            "value <= 200",
            m,
        )
    )
    return records


def separated_records(train: PairedData, test: PairedData, dual: Surrogate, dual_classes: np.ndarray) -> list[Record]:
    """The separated-VAE baseline on the dual VAE's split: im2spec error and particle-number accuracy."""
    m = machine()
    sep = separated_vaes(train, latent=8, steps=TRAIN_STEPS, seed=0)  # the same work as the dual VAE
    d_r2, d_rel = r2_and_relative_error(test.spectra, dual.predict_spectra(test.patches)[0])
    s_r2, s_rel = r2_and_relative_error(test.spectra, sep.predict_spectra(test.patches))
    out = [
        Record(
            "surrogates",
            "dark-field: im2spec R², dual VAE vs separated VAEs (same split)",
            d_r2,
            "",
            "separated VAEs + linear map",
            s_r2,
            d_r2 / s_r2 if s_r2 > 0 else float("nan"),
            "",
            m,
        ),
        Record(
            "surrogates",
            "dark-field: im2spec median relative error, dual vs separated",
            d_rel,
            "",
            "separated VAEs + linear map",
            s_rel,
            d_rel / s_rel,
            "ratio <= 1",
            m,
        ),
    ]
    predicted = latent_classes(sep.spectrum_latent, train, test)
    assert test.labels is not None
    for k in (1, 2, 3):
        dual_acc = float(np.mean(dual_classes[test.labels == k] == k))
        sep_acc = float(np.mean(predicted[test.labels == k] == k))
        out.append(
            Record(
                "surrogates",
                f"dark-field: {k}-particle accuracy, dual VAE vs separated VAEs",
                dual_acc,
                "",
                "separated VAEs",
                sep_acc,
                dual_acc / sep_acc if sep_acc else float("nan"),
                "",
                m,
            )
        )
    return out


def stem(workdir: Path) -> list[Record]:
    options = StemTwinOptions.first_twin(acquisition_time_s=0.02, seed=2)  # as recorded (issue 21)
    twin = stem_twin(options, SystemClock())
    image = twin.acquire_image("haadf")
    cands = CandidateSet.from_image_grid(image, twin.describe(), 3, 2)
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(len(cands), size=min(1600, len(cands)), replace=False))
    expected = np.concatenate([twin.expected_counts(cands.positions[chunk]) for chunk in idx.reshape(-1, 100)])
    spectra = rng.poisson(expected).astype(np.float32)
    patches = extract_patches(image.data, cands.pixels[idx], 32)
    data = PairedData.paired(patches, spectra, positions=cands.positions[idx])
    # whole tiles of the field held out: with candidates 3 px apart and 32 px patches, a random split
    # gives nearly every test patch a training patch shifted by 3 px (issue 21)
    train, test = data.split(0.25, rng)
    model = Surrogate(SurrogateConfig(), 32, spectra.shape[1], device=CPU, seed=0)
    model.fit(train, TRAIN_STEPS)  # fixed work, not a time budget
    return im2spec_records("STEM-EELS twin", model, train, test)


def real_emd() -> list[Record]:
    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "fei_emd_si.emd"
    try:
        from rsciio.emd import file_reader
    except ImportError:
        print("  fei_emd_si.emd: skipped; install the optional extra: pip install -e '.[formats]'")
        return []
    objs = {o["metadata"]["General"]["title"]: o for o in file_reader(str(path), select_type=None)}
    haadf = np.asarray(objs["HAADF"]["data"], np.float32)
    eds = np.asarray(
        objs["EDS"]["data"].todense() if hasattr(objs["EDS"]["data"], "todense") else objs["EDS"]["data"], np.float32
    )
    spectra = eds.reshape(256, 256, 16).sum(axis=2)  # 4096 channels → 256 bins of 160 eV
    rows, cols = np.meshgrid(np.arange(16), np.arange(16), indexing="ij")
    patches = extract_patches(haadf, np.column_stack([rows.ravel(), cols.ravel()]), 8)
    order = np.random.default_rng(0).permutation(256)
    data = PairedData.paired(patches, spectra)
    train, test = data.subset(order[:200]), data.subset(order[200:])
    model = Surrogate(SurrogateConfig(kind="im2spec", latent=4), 8, 256, device=CPU, seed=0)
    model.fit(train, 400)
    return im2spec_records("real fei_emd_si.emd (HAADF → EDS)", model, train, test)


def run() -> list[Record]:
    """Measure and return the surrogate records."""
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        records = darkfield(Path(tmp))
        records += stem(Path(tmp))
        records += real_emd()
        print(f"  surrogates took {time.perf_counter() - t0:.0f} s")
    return records
