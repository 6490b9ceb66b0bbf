"""The search projection (genre_detector.models.projection): unit rows, a version that follows
the numbers, a file round trip, and the shipped file (models/musicnn/projection.npz)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from genre_detector.models.projection import PROJECTION_FILE, Projection

D_IN, D_OUT = 12, 5
SHIPPED = Path(__file__).resolve().parent.parent / "models" / "musicnn" / PROJECTION_FILE
# The documented size of the shipped search vectors (train/projection.py: DEFAULT_DIM).
SHIPPED_DIM = 64
SHIPPED_D_IN = 1000  # [mean, spread] of musicnn's 500 backbone features per window


def _projection(seed=0, method="pca") -> Projection:
    rng = np.random.default_rng(seed)
    return Projection(
        rng.normal(size=D_IN), rng.uniform(0.5, 2.0, D_IN), rng.normal(size=(D_IN, D_OUT)), method
    )


def test_rows_are_unit_length_float32_and_cosine_is_a_dot_product():
    proj = _projection()
    x = np.random.default_rng(1).normal(size=(7, D_IN))
    v = proj.apply(x)
    assert v.shape == (7, D_OUT) and v.dtype == np.float32 and proj.dim == D_OUT
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-6)
    z = ((x - proj.mean) / proj.scale) @ proj.matrix.astype(np.float64)
    cos = (z[0] @ z[1]) / np.linalg.norm(z[0]) / np.linalg.norm(z[1])
    assert float(v[0] @ v[1]) == pytest.approx(cos, abs=1e-6)
    one = proj.apply(x[3])  # one embedding -> one vector, the same as its row
    assert one.shape == (D_OUT,)
    np.testing.assert_allclose(one, v[3], atol=1e-7)
    assert proj.apply(np.zeros((0, D_IN))).shape == (0, D_OUT)


def test_a_row_that_projects_to_zero_stays_zero():
    proj = _projection()
    v = proj.apply(np.stack([proj.mean, proj.mean + 1.0]))  # the mean projects to zero
    assert np.all(v[0] == 0) and np.all(np.isfinite(v))
    assert np.linalg.norm(v[1]) == pytest.approx(1.0, abs=1e-6)


def test_bad_shapes_are_refused():
    proj = _projection()
    with pytest.raises(ValueError, match=f"length {D_IN}"):
        proj.apply(np.zeros(D_IN + 1))
    with pytest.raises(ValueError, match=f"length {D_IN}"):
        proj.apply(np.zeros((2, 2, D_IN)))
    with pytest.raises(ValueError, match="disagree"):
        Projection(np.zeros(D_IN), np.ones(D_IN - 1), np.zeros((D_IN, D_OUT)), "x")
    with pytest.raises(ValueError, match="positive"):
        Projection(np.zeros(D_IN), np.zeros(D_IN), np.zeros((D_IN, D_OUT)), "x")
    with pytest.raises(ValueError, match="non-finite"):
        Projection(np.zeros(D_IN), np.ones(D_IN), np.full((D_IN, D_OUT), np.nan), "x")


def test_it_is_frozen_and_keeps_its_own_copy():
    m = np.ones((D_IN, D_OUT))
    proj = Projection(np.zeros(D_IN), np.ones(D_IN), m, "x")
    before = proj.version
    m[0, 0] = 5.0  # the caller's array changing does not change the projection
    assert proj.version == before
    with pytest.raises(ValueError):
        proj.matrix[0, 0] = 5.0
    with pytest.raises(AttributeError):
        proj.method = "y"


def test_version_changes_with_every_part_and_only_then():
    proj = _projection()
    assert len(proj.version) == 12 and int(proj.version, 16) >= 0
    assert _projection().version == proj.version  # the same numbers: the same version
    nudged = proj.matrix.copy()
    nudged[3, 2] += 1e-3
    changed = [
        Projection(proj.mean, proj.scale, nudged, proj.method),
        Projection(proj.mean + 1e-3, proj.scale, proj.matrix, proj.method),
        Projection(proj.mean, proj.scale * 1.01, proj.matrix, proj.method),
        Projection(proj.mean, proj.scale, proj.matrix, "lda"),
        Projection(proj.mean, proj.scale, proj.matrix[:, :-1], proj.method),
    ]
    versions = {p.version for p in changed}
    assert proj.version not in versions and len(versions) == len(changed)


def test_save_load_round_trip(tmp_path):
    proj = _projection(method="lda+pca-64-w0.5")
    path = proj.save(tmp_path / "proj.bin")  # any suffix: written through an open file
    assert path == tmp_path / "proj.bin" and path.exists()
    back = Projection.load(path)
    assert back.method == proj.method and back.version == proj.version
    for a in ("mean", "scale", "matrix"):
        np.testing.assert_array_equal(getattr(back, a), getattr(proj, a))
    x = np.random.default_rng(2).normal(size=(3, D_IN))
    np.testing.assert_array_equal(back.apply(x), proj.apply(x))


def test_the_shipped_projection_loads_with_its_documented_dimension():
    proj = Projection.load(SHIPPED)
    from train.projection import DEFAULT_DIM, DEFAULT_METHOD

    assert proj.dim == SHIPPED_DIM == DEFAULT_DIM and proj.d_in == SHIPPED_D_IN
    assert proj.method.startswith(DEFAULT_METHOD)  # what `python -m train.projection` writes
    assert SHIPPED.stat().st_size < 2 * 1024 * 1024
    v = proj.apply(np.random.default_rng(0).normal(size=(4, SHIPPED_D_IN)))
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    "method, kw, dim",
    [
        ("standardised", {}, 20),
        ("pca", {"dim": 5}, 5),
        ("pca-whiten", {"dim": 5}, 5),
        ("lda", {}, 2),
        ("lda+pca", {"dim": 6}, 6),
        ("nca", {"dim": 4, "nca_input": 10}, 4),
    ],
)
def test_every_training_method_fits_a_projection_that_finds_the_class(method, kw, dim):
    """train.projection on three classes whose means differ in 8 of 20 noisy features (on
    different scales): each method gives a Projection of the stated size under which a
    track's nearest neighbour is mostly of its own class."""
    from train.projection import fit_projection

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 40)
    centres = np.zeros((3, 20))
    centres[:, :8] = rng.normal(0, 2.0, (3, 8))
    x = (centres[y] + rng.normal(size=(120, 20))) * rng.uniform(0.1, 10.0, 20)
    proj = fit_projection(method, x, y, **kw)
    assert proj.dim == dim and proj.d_in == 20 and proj.method.startswith(method)
    v = proj.apply(x)
    sims = v @ v.T
    np.fill_diagonal(sims, -np.inf)
    assert np.mean(y[sims.argmax(axis=1)] == y) > 0.7
    with pytest.raises(ValueError, match="unknown method"):
        fit_projection("tsne", x, y)
