"""The Fréchet distance between two Gaussians, and the feature statistics it is computed from.

    FD(N(μ1, Σ1), N(μ2, Σ2)) = ‖μ1 − μ2‖² + tr Σ1 + tr Σ2 − 2 tr (Σ1 Σ2)^½

Everything is float64. `tr (Σ1 Σ2)^½` is computed without a general (complex) matrix square root:
Σ1 Σ2 = R R Σ2 with R = Σ1^½ (symmetric, from an eigendecomposition) has the same eigenvalues as the
symmetric positive semi-definite R Σ2 R, so the trace is Σ √λᵢ over the eigenvalues of R Σ2 R (tiny
negative eigenvalues from rounding are clipped to 0). No scipy needed; singular covariances (fewer
samples than features) are fine.

`GaussianStats` accumulates the count, the mean and the centred second moment M2 = Σ (x − μ)(x − μ)ᵀ
of feature vectors, batch by batch, with the pairwise update of Chan, Golub & LeVeque (1979): no
E[xxᵀ] − μμᵀ cancellation, so features with a large common offset keep their covariance, and two
partial statistics (two ranks, two halves of a set) merge into exactly what one pass gives.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

DTYPE = torch.float64  # every statistic and every step of the distance


def _as_float64(x: Any, what: str) -> torch.Tensor:
    """A CPU float64 tensor from a tensor, an array or a list; a ValueError if it is not finite."""
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    t = t.to("cpu", DTYPE)
    if not torch.isfinite(t).all():
        raise ValueError(f"{what} holds NaN or Inf")
    return t


def _symmetric(m: torch.Tensor) -> torch.Tensor:
    return (m + m.T) / 2


def sqrtm_psd(sigma: Any) -> torch.Tensor:
    """The symmetric square root of a symmetric positive semi-definite matrix, float64 (negative
    eigenvalues from rounding are taken as 0)."""
    s = _symmetric(_as_float64(sigma, "sigma"))
    eigenvalues, vectors = torch.linalg.eigh(s)
    return (vectors * eigenvalues.clamp(min=0).sqrt()) @ vectors.T


def trace_sqrt_product(sigma1: Any, sigma2: Any) -> float:
    """tr (Σ1 Σ2)^½ for symmetric PSD Σ1, Σ2: Σ √λᵢ over the eigenvalues of Σ1^½ Σ2 Σ1^½, float64."""
    root1 = sqrtm_psd(sigma1)
    inner = _symmetric(root1 @ _symmetric(_as_float64(sigma2, "sigma2")) @ root1)
    return float(torch.linalg.eigvalsh(inner).clamp(min=0).sqrt().sum())


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2): mu `[D]`, sigma `[D, D]` (tensors,
    arrays or lists), computed in float64. Raises a ValueError for mismatched shapes or NaN / Inf."""
    mu1, mu2 = _as_float64(mu1, "mu1"), _as_float64(mu2, "mu2")
    sigma1, sigma2 = _as_float64(sigma1, "sigma1"), _as_float64(sigma2, "sigma2")
    d = mu1.shape[0] if mu1.ndim == 1 else -1
    for name, value, shape in (("mu1", mu1, (d,)), ("mu2", mu2, (d,)), ("sigma1", sigma1, (d, d)),
                               ("sigma2", sigma2, (d, d))):
        if d < 1 or tuple(value.shape) != shape:
            raise ValueError(f"frechet_distance: {name} must be {'[D]' if len(shape) == 1 else '[D, D]'} "
                             f"with D = {d}; got shape {list(value.shape)}")
    diff = mu1 - mu2
    value = diff @ diff + torch.trace(sigma1) + torch.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2)
    return float(value)


class GaussianStats:
    """Count, mean `[D]` and centred second moment `[D, D]` of feature vectors, float64 on the CPU.

    `update(features)` adds a batch `[N, D]`; `merge(other)` adds another `GaussianStats` (another
    rank's, another part's). The result does not depend on how the set was split, up to rounding.
    `covariance()` is the maximum-likelihood estimate M2 / n (what stylegan and StyleGAN-V use for
    FID / FVD); `covariance(unbiased=True)` divides by n − 1 (`np.cov`).
    """

    def __init__(self, dim: int):
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"GaussianStats: dim must be a positive integer; got {dim!r}")
        self.dim = dim  # D, feature length
        self.count = 0  # n, feature vectors seen
        self.mean = torch.zeros(dim, dtype=DTYPE)  # μ, [D]
        self.m2 = torch.zeros(dim, dim, dtype=DTYPE)  # Σ (x − μ)(x − μ)ᵀ, [D, D]

    @classmethod
    def from_features(cls, features: Any) -> "GaussianStats":
        """Statistics of one set of features `[N, D]`."""
        x = _as_float64(features, "features")
        if x.ndim != 2:
            raise ValueError(f"features must be [N, D]; got shape {list(x.shape)}")
        return cls(x.shape[1]).update(x)

    def _combine(self, count: int, mean: torch.Tensor, m2: torch.Tensor) -> None:
        """Chan et al.'s pairwise update with a part of `count` vectors, its mean and centred M2."""
        if count == 0:
            return
        total = self.count + count
        delta = mean - self.mean  # [D]
        self.mean = self.mean + delta * (count / total)
        self.m2 = self.m2 + m2 + torch.outer(delta, delta) * (self.count * count / total)
        self.count = total

    def update(self, features: Any) -> "GaussianStats":
        """Add a batch of feature vectors `[N, D]` (any float dtype; converted to float64). Returns self."""
        x = _as_float64(features, "features")
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"features must be [N, {self.dim}]; got shape {list(x.shape)}")
        if x.shape[0]:
            mean = x.mean(dim=0)  # [D]
            centred = x - mean  # [N, D]
            self._combine(x.shape[0], mean, centred.T @ centred)
        return self

    def merge(self, other: "GaussianStats") -> "GaussianStats":
        """Add the vectors summarised by `other` (same D). Returns self."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge statistics of {other.dim} features into {self.dim}")
        self._combine(other.count, other.mean, other.m2)
        return self

    def covariance(self, unbiased: bool = False) -> torch.Tensor:
        """Σ `[D, D]`, float64: M2 / n, or M2 / (n − 1) when `unbiased`."""
        denominator = self.count - (1 if unbiased else 0)
        if denominator < 1:
            raise ValueError(f"a covariance needs at least {2 if unbiased else 1} feature vectors; "
                             f"have {self.count}")
        return _symmetric(self.m2) / denominator

    def state_dict(self) -> dict[str, np.ndarray]:
        """Plain NumPy arrays (`count`, `mean`, `m2`), e.g. for `np.savez`; no pickle needed."""
        return {"count": np.array(self.count, dtype=np.int64), "mean": self.mean.numpy().copy(),
                "m2": self.m2.numpy().copy()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "GaussianStats":
        mean, m2 = _as_float64(state["mean"], "mean"), _as_float64(state["m2"], "m2")
        if mean.ndim != 1 or tuple(m2.shape) != (mean.shape[0], mean.shape[0]):
            raise ValueError(f"inconsistent statistics: mean {list(mean.shape)}, m2 {list(m2.shape)}")
        stats = cls(int(mean.shape[0]))
        stats.count, stats.mean, stats.m2 = int(np.asarray(state["count"])), mean, m2
        return stats

    def frechet_distance(self, other: "GaussianStats") -> float:
        """FD between the Gaussians fitted (maximum likelihood) to the two sets."""
        return frechet_distance(self.mean, self.covariance(), other.mean, other.covariance())

    def __repr__(self) -> str:
        return f"GaussianStats(dim={self.dim}, count={self.count})"
