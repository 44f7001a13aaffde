"""Computing the metrics from sides: features, statistics and the cache, shared by every metric.

The CLI (``aigc eval``) and the trainer call these; nothing here prints. Messages, warnings and
progress go through a :class:`Reporter` (the CLI's one draws rich progress bars on stderr).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from aigc_cli.core import distributed
from aigc_cli.core.errors import AigcError
from aigc_cli.metrics.features import FEATURE_DIM, PREPROCESSING, FeatureSet
from aigc_cli.metrics.registry import FID_N, get_metric
from aigc_cli.metrics.sides import Side, iter_side_batches, sample_run
from aigc_cli.metrics.stats import Stats, cache_key, cache_load, cache_store, compute_stats, load_stats

MIN_FID_IMAGES = FID_N


class Reporter:
    """Where the core says things. The default one says nothing."""

    def info(self, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        pass

    @contextlib.contextmanager
    def progress(self, label: str, total: int | None) -> Iterator[Callable[[int], None]]:
        yield lambda k: None

    def download_progress(self, url: str) -> Callable[[int, int | None], None] | None:
        return None

    def download_done(self) -> None:
        pass


@dataclass
class EvalContext:
    """Weights, device and batch size for one evaluation, with the extractor loaded once."""

    weights: str | None = None  # an explicit --inception-weights path
    device: Any = "cpu"
    batch_size: int | None = None
    reporter: Reporter = field(default_factory=Reporter)
    allow_download: bool = True
    warnings: list[str] = field(default_factory=list)
    _path: Any = None
    _sha256: str | None = None
    _extractor: Any = None
    extractions: int = 0  # how many sides went through the network (tests count them)

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        self.reporter.warn(message)

    def weights_path(self):
        if self._path is None:
            from aigc_cli.metrics.weights import locate_weights

            bar: dict[str, Any] = {}

            def on_download(url, dest):
                self.reporter.info(f"downloading the FID Inception weights from {url} to {dest}")
                bar["advance"] = self.reporter.download_progress(url)

            def progress(done, total):
                if bar.get("advance"):
                    bar["advance"](done, total)

            try:
                self._path = locate_weights(self.weights, self.allow_download, progress, on_download)
            finally:
                if bar.get("advance"):
                    self.reporter.download_done()
        return self._path

    def weights_sha256(self) -> str:
        if self._sha256 is None:
            from aigc_cli.metrics.weights import file_sha256

            self._sha256 = file_sha256(self.weights_path())
        return self._sha256

    def extractor(self):
        if self._extractor is None:
            self._extractor = get_extractor(self.weights_path(), self.device, self.batch_size)
            self._extractor.on_batch_halved = lambda b: self.warn(f"out of GPU memory: batch size halved to {b}")
        return self._extractor


_EXTRACTOR_CACHE: dict[tuple, Any] = {}


def get_extractor(path, device, batch_size: int | None = None):
    """An Extractor, kept for the process's life so repeated evaluations (training) load it once."""
    import os

    import torch

    from aigc_cli.metrics.features import Extractor

    st = os.stat(path)
    key = (str(path), st.st_size, st.st_mtime_ns, str(torch.device(device)), batch_size)
    ex = _EXTRACTOR_CACHE.get(key)
    if ex is None:
        _EXTRACTOR_CACHE.clear()  # one network in memory at a time
        ex = Extractor(path, device, batch_size)
        _EXTRACTOR_CACHE[key] = ex
    return ex


# ----------------------------------------------------------------------------------------------
# Features and statistics of a side


def _key(side: Side, ctx: EvalContext) -> str | None:
    if not side.cacheable:
        return None
    return cache_key(side.fingerprint, side.n, ctx.weights_sha256(), PREPROCESSING)


def _extract(side: Side, ctx: EvalContext) -> FeatureSet:
    ex = ctx.extractor()
    ctx.extractions += 1
    if side.kind == "run":
        ctx.reporter.info(f"sampling {side.n} images from {side.label} (seed {side.seed})")
        images = sample_run(side, ex.device)
        with ctx.reporter.progress(f"Inception features: {side.label}", len(images)) as advance:
            return ex.extract_tensor(images, advance)
    if side.kind == "stats":
        raise AigcError(f"{side.spec} is a statistics file (mean and covariance only); this metric needs images")
    if side.kind == "dataset":
        with ctx.reporter.progress(f"Inception features: {side.label}", side.n) as advance:
            feats = ex.extract_tensor(side.images, advance)
    else:
        feats = _extract_folder(side, ex, ctx)
    skipped = side.details.get("skipped")
    if skipped:
        ctx.warn(f"{side.label}: {skipped} file(s) could not be read as images and were skipped")
    if len(feats) == 0:
        raise AigcError(f"{side.label}: no readable images")
    return feats


def _extract_folder(side: Side, ex, ctx: EvalContext) -> FeatureSet:
    """A folder's features; under torchrun each rank decodes and extracts its own whole network
    batches of the sorted files, and every rank gets every feature, in file order."""
    from aigc_cli.metrics.features import gather_features

    # Files decoded together (FolderReader's batch): whole network batches, at least 256.
    read = ex.batch_size * -(-256 // ex.batch_size)
    if not distributed.active():
        with ctx.reporter.progress(f"Inception features: {side.label}", side.n) as advance:
            return ex.extract(iter_side_batches(side, read), side.n, advance)
    lo, hi = distributed.shard(len(side.files), ex.batch_size)
    mine = Side(side.spec, side.kind, side.label, n=hi - lo, files=side.files[lo:hi])
    with ctx.reporter.progress(f"Inception features: {side.label}", hi - lo) as advance:
        feats = gather_features(ex.extract(iter_side_batches(mine, read), hi - lo, advance))
    side.details["skipped"] = distributed.all_sum(mine.details.get("skipped", 0))
    side.n = len(side.files) - side.details["skipped"]
    return feats


def _store(side: Side, key: str | None, feats: FeatureSet, stats: Stats, ctx: EvalContext) -> None:
    if key is None or not distributed.is_main():  # under torchrun rank 0 alone writes the cache
        return
    meta = {
        "source": side.info(),
        "weights_sha256": ctx.weights_sha256(),
        "preprocessing": PREPROCESSING,
    }
    cache_store(key, feats, stats, meta)


def side_features(side: Side, ctx: EvalContext) -> FeatureSet:
    """Pool features and logits of a side, from the cache when there."""
    if side.kind == "stats":
        raise AigcError(
            f"{side.spec} is a statistics file (mean and covariance only); KID, IS and precision/recall "
            "need images, a run or a dataset"
        )
    return _cached_or_extracted(side, ctx, "features")


def _cached_or_extracted(side: Side, ctx: EvalContext, what: str):
    """A side's "features" or "stats" from the cache when there; else extracted, and both cached."""
    key = _key(side, ctx)
    if key is not None:
        # Under torchrun the ranks extract together or not at all: rank 0 reads the cache and
        # hands what it found to the others (one broadcast; the cache needs no shared disk).
        hit = distributed.broadcast_object(cache_load(key, what) if distributed.is_main() else None)
        if hit is not None:
            side.details["cached"] = True
            return hit
    feats = _extract(side, ctx)
    side.n = len(feats)
    stats = _stats_of(feats, side) if key is not None or what == "stats" else None
    if key is not None:
        _store(side, key, feats, stats, ctx)
    return feats if what == "features" else stats


def _stats_of(feats: FeatureSet, side: Side) -> Stats:
    if len(feats) < 2:
        raise AigcError(f"{side.label}: statistics need at least 2 images, got {len(feats)}")
    return compute_stats(feats.features)


def side_stats(side: Side, ctx: EvalContext) -> Stats:
    """Float64 mean and covariance of a side's pool features."""
    if side.kind == "stats":
        stats = load_stats(side.path)
        side.n = stats.n
        if stats.mu.shape[0] != FEATURE_DIM:
            raise AigcError(
                f"{side.spec} holds {stats.mu.shape[0]}-d statistics; FID uses the {FEATURE_DIM}-d pool features"
            )
        for key in ("weights_sha256", "preprocessing"):
            if key in stats.meta:
                side.details[key] = stats.meta[key]
        return stats
    return _cached_or_extracted(side, ctx, "stats")


def _small_warning(side: Side, which: str, ctx: EvalContext) -> None:
    if side.n is not None and side.n < MIN_FID_IMAGES:
        ctx.warn(
            f"side {which} has {side.n} images (< {MIN_FID_IMAGES}): the estimate is biased (too high) and "
            "not comparable with published numbers; use 10000 or more"
        )


def _common(ctx: EvalContext, sides: dict[str, Side], started: float, sha: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for which, side in sides.items():
        out[f"n_{which}"] = side.n
    for which, side in sides.items():
        out[which] = side.info()
    out.update(
        weights_sha256=sha,
        weights=str(ctx._path) if ctx._path is not None else None,
        preprocessing=PREPROCESSING,
        feature_dim=FEATURE_DIM,
        device=str(ctx._extractor.device) if ctx._extractor is not None else None,
        warnings=list(ctx.warnings),
        seconds=round(time.perf_counter() - started, 3),
    )
    return out


# ----------------------------------------------------------------------------------------------
# The metrics


def compute_fid(a: Side, b: Side, ctx: EvalContext, save_stats: str | None = None) -> dict[str, Any]:
    """FID of A against B; ``save_stats``: also write side A's statistics to this .npz."""
    from aigc_cli.core.io import check_output
    from aigc_cli.metrics.frechet import frechet_distance
    from aigc_cli.metrics.stats import save_stats as write_stats

    if save_stats:
        check_output(save_stats, "stats.npz")  # before any work: a folder, an unwritable place...
    started = time.perf_counter()
    need_net = a.kind != "stats" or b.kind != "stats"
    sha = ctx.weights_sha256() if need_net else None
    sa = side_stats(a, ctx)
    sb = side_stats(b, ctx)
    for side in (a, b):
        file_sha = side.details.get("weights_sha256")
        if file_sha and sha and file_sha != sha:
            ctx.warn(f"{side.spec} was computed with other Inception weights (sha256 {file_sha[:12]}...)")
    if sha is None:
        shas = {s.details.get("weights_sha256") for s in (a, b)} - {None}
        if len(shas) > 1:
            ctx.warn("the two statistics files were computed with different Inception weights")
        sha = shas.pop() if len(shas) == 1 else None
    _small_warning(a, "A", ctx)
    _small_warning(b, "B", ctx)
    value = frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma)
    if save_stats:
        sa.meta = {**sa.meta, "source": a.info(), "weights_sha256": sha, "preprocessing": PREPROCESSING}
        if distributed.is_main():  # under torchrun rank 0 alone writes
            write_stats(save_stats, sa)
    out = {"metric": "fid", "fid": value}
    out.update(_common(ctx, {"a": a, "b": b}, started, sha))
    if save_stats:
        out["saved_stats"] = str(save_stats)
    return out


def compute_kid(a: Side, b: Side, ctx: EvalContext, **options: Any) -> dict[str, Any]:
    from aigc_cli.core.options import resolve
    from aigc_cli.metrics.kid import kid

    o = resolve(get_metric("kid").options, options, "KID")
    subsets, subset_size, degree, gamma, coef0, seed = (
        o["subsets"], o["subset_size"], o["degree"], o["gamma"], o["coef0"], o["seed"])

    started = time.perf_counter()
    fa, fb = side_features(a, ctx), side_features(b, ctx)
    size = min(subset_size, len(fa), len(fb))
    if size < 2:
        raise AigcError("KID needs at least 2 images on each side")
    if size < subset_size:
        ctx.warn(f"KID subset size lowered from {subset_size} to {size}, the smaller side's image count")
    r = kid(fa.features, fb.features, subsets=subsets, subset_size=size, degree=degree, gamma=gamma,
            coef0=coef0, seed=seed)  # fmt: skip
    out = {"metric": "kid", "kid": r.mean, "kid_std": r.std, "subsets": r.subsets, "subset_size": r.subset_size,
           "kernel": {"type": "poly", "degree": degree, "gamma": gamma, "coef0": coef0}, "rng_seed": seed}  # fmt: skip
    out.update(_common(ctx, {"a": a, "b": b}, started, ctx.weights_sha256()))
    return out


def compute_is(a: Side, ctx: EvalContext, **options: Any) -> dict[str, Any]:
    from aigc_cli.core.options import resolve
    from aigc_cli.metrics.isc import inception_score

    o = resolve(get_metric("is").options, options, "the Inception Score")
    splits, seed = o["splits"], o["seed"]

    started = time.perf_counter()
    fa = side_features(a, ctx)
    used = min(splits, len(fa))
    if used < splits:
        ctx.warn(f"Inception Score splits lowered from {splits} to {used}, the image count")
    if len(fa) < 5000:
        ctx.warn(f"side A has {len(fa)} images: the Inception Score is usually reported on 50000")
    r = inception_score(fa.logits, splits=used, seed=seed)
    out = {"metric": "is", "is": r.mean, "is_std": r.std, "splits": r.splits, "logits": "unbiased (fc without bias)",
           "rng_seed": seed}  # fmt: skip
    out.update(_common(ctx, {"a": a}, started, ctx.weights_sha256()))
    return out


def compute_pr(a: Side, b: Side, ctx: EvalContext, **options: Any) -> dict[str, Any]:
    from aigc_cli.core.options import resolve
    from aigc_cli.metrics.prc import precision_recall

    k = resolve(get_metric("pr").options, options, "precision/recall")["k"]

    started = time.perf_counter()
    fa, fb = side_features(a, ctx), side_features(b, ctx)
    if min(len(fa), len(fb)) < k + 1:
        raise AigcError(f"precision/recall with k={k} needs at least {k + 1} images on each side")
    r = precision_recall(fa.features, fb.features, k=k)
    out = {"metric": "pr", "precision": r.precision, "recall": r.recall, "f_score": r.f_score, "k": r.k,
           "features": "inception pool 2048"}  # fmt: skip
    out.update(_common(ctx, {"a": a, "b": b}, started, ctx.weights_sha256()))
    return out


def compute_stats_file(side: Side, out_path: str, ctx: EvalContext) -> dict[str, Any]:
    from aigc_cli.core.io import check_output
    from aigc_cli.metrics.stats import save_stats

    started = time.perf_counter()
    if side.kind == "stats":
        raise AigcError(f"{side.spec} is already a statistics file")
    check_output(out_path, "stats.npz")  # before any work: a folder, an unwritable place...
    stats = side_stats(side, ctx)
    sha = ctx.weights_sha256()
    _small_warning(side, "A", ctx)
    stats.meta = {"source": side.info(), "weights_sha256": sha, "preprocessing": PREPROCESSING}
    if distributed.is_main():
        save_stats(out_path, stats)
    out = {"metric": "stats", "path": str(out_path), "n": side.n}
    out.update(_common(ctx, {"a": side}, started, sha))
    return out


# ----------------------------------------------------------------------------------------------
# During training


def fid_against_dataset(
    sampler_uint8_fn: Callable[[int], Any],
    dataset,
    n: int,
    weights_path: str | None = None,
    device: Any = "cpu",
    ref_n: int | None = None,
    reporter: Reporter | None = None,
) -> float | None:
    """FID of ``n`` samples against ``dataset`` (an ImageDataset); None when no weights are found.

    ``sampler_uint8_fn(n)`` returns (n, C, H, W) uint8 images, quantised as saved to PNG. The
    reference side uses ``ref_n`` images of the dataset (default: ``n``; a fixed random subset) and
    its statistics are cached, so only the samples go through the network after the first call.
    Weights: ``weights_path``, else ``AIGC_INCEPTION_WEIGHTS``, else the cache; never downloaded.
    """
    from aigc_cli.metrics.frechet import frechet_distance
    from aigc_cli.metrics.sides import SUBSET_SEED, subset_indices
    from aigc_cli.metrics.weights import find_weights

    path = find_weights(weights_path)
    if path is None:
        return None
    ctx = EvalContext(weights=str(path), device=device, reporter=reporter or Reporter(), allow_download=False)
    ref_n = n if ref_n is None else ref_n
    idx = subset_indices(len(dataset), ref_n)
    images = dataset.images if idx is None else dataset.images[idx]
    fingerprint = dataset.fingerprint if idx is None else f"{dataset.fingerprint}|subset{SUBSET_SEED}"
    ref = Side(getattr(dataset, "name", "dataset"), "dataset", getattr(dataset, "name", "dataset"),
               n=len(images), fingerprint=fingerprint, images=images)  # fmt: skip
    ref_stats = side_stats(ref, ctx)
    samples = sampler_uint8_fn(n)
    ex = ctx.extractor()
    feats = ex.extract_tensor(samples.cpu())
    if len(feats) < 2:
        raise AigcError("FID needs at least 2 samples")
    st = compute_stats(feats.features)
    return frechet_distance(st.mu, st.sigma, ref_stats.mu, ref_stats.sigma)
