"""``aigc info``: versions, device, threads and folders."""

from __future__ import annotations

import typer

from aigc_cli.cli import common


def info(json_out: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Show versions, the chosen device, threads, and the data and cache folders."""
    import platform

    import torch

    from aigc_cli import __version__
    from aigc_cli.core.memory import tune_cpu_allocator
    from aigc_cli.core.paths import cache_dir, home, runs_root
    from aigc_cli.core.threads import describe as describe_threads
    from aigc_cli.data.cache import cache_size as dataset_cache_size

    dev = common.device()
    data = {
        "aigc": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "device": str(dev),
        "cuda_available": torch.cuda.is_available(),
        "threads": torch.get_num_threads(),
        "threads_policy": describe_threads(),
        "cpu_allocator": tune_cpu_allocator(),
        "home": str(home()),
        "runs": str(runs_root()),
        "cache": str(cache_dir()),
        "dataset_cache_bytes": dataset_cache_size(),
    }
    if dev.type == "cuda":
        data["gpu"] = torch.cuda.get_device_name(dev)
    if json_out:
        common.print_json(data)
    else:
        common.table(None, ["", ""], [[k, v] for k, v in data.items()], result=True)
