"""FID during training (``eval_every`` epochs, ``fid_n`` samples), for the CLI and the Python API.

``make_evaluator(run, config, data, device, say)`` returns ``evaluate(epoch) -> dict | None`` for
the Trainer: it samples ``fid_n`` images from the run's weights as just saved (always the same
seed, so the curve shows the model changing, not the sampling noise) and measures FID against as
many images of the training data (a fixed random subset; its statistics are cached after the
first evaluation). With no weights file available, or an unusable one, it says so once and
records nothing: training goes on.
"""

from __future__ import annotations

from typing import Any, Callable

from aigc_cli.metrics.registry import FID_N

EVAL_SEED = 0


def _notice_text() -> str:
    from aigc_cli.metrics.weights import ENV_WEIGHTS, FILENAME, weights_url

    return (
        f"FID skipped: no Inception weights found; set {ENV_WEIGHTS} to {FILENAME} "
        f"(from {weights_url()}) or run 'aigc eval fid' once to download it"
    )


def make_evaluator(
    run,
    config: dict[str, Any],
    data,
    device,
    say: Callable[[str], None],
    weights_path: str | None = None,
) -> Callable[[int], dict[str, Any] | None]:
    fid_n = int(config.get("eval", {}).get("fid_n", FID_N))
    noticed = []

    def notice(text: str) -> None:
        if not noticed:
            say(text)
            noticed.append(text)

    def evaluate(epoch: int) -> dict[str, Any] | None:
        from aigc_cli.core.errors import WeightsError
        from aigc_cli.generation import load_generator
        from aigc_cli.metrics.evaluate import fid_against_dataset

        def sampler(n: int):
            return load_generator(run, device, command="eval fid").sample_uint8(n, EVAL_SEED)

        try:
            value = fid_against_dataset(sampler, data, fid_n, weights_path=weights_path, device=device)
        except WeightsError as e:  # a bad weights file must not end hours of training
            notice(f"FID skipped: {e}")
            return None
        if value is None:
            notice(_notice_text())
            return None
        say(f"epoch {epoch}: FID {value:.3f} ({fid_n} samples)")
        return {"fid": value, "fid_n": fid_n}

    return evaluate
