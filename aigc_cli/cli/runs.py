"""``aigc runs``: list, show, remove runs and print their folders."""

from __future__ import annotations

import typer

from aigc_cli.cli import common

app = typer.Typer(help="Manage runs: list, show, plot, rm, path.", no_args_is_help=True)

FIELDS = ("id", "name", "family", "status", "epoch", "epochs", "step", "created", "dataset", "imported", "tuned")


def summary(run) -> dict:
    meta = run.read_meta()
    return {k: meta.get(k) for k in FIELDS}


@app.command("list")
def list_runs(json_out: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """List all runs, oldest first."""
    from aigc_cli.runs.store import list_runs as all_runs

    rows = [summary(r) for r in all_runs()]
    if json_out:
        common.print_json(rows)
        return
    if not rows:
        common.info("no runs yet; start one with 'aigc train gan'")
        return
    common.table(None, ["id", "name", "family", "status", "epoch", "step", "created", "dataset"],
                 [[r["id"], r["name"], r["family"], r["status"], epoch_cell(r["epoch"], r["epochs"]), r["step"],
                   r["created"], r["dataset"] or (f"imported from {r['imported']}" if r["imported"] else None)
                   or (f"tuned from {r['tuned']}" if r["tuned"] else None)]
                  for r in rows], result=True)


def epoch_cell(epoch, epochs) -> str:
    """``3/20``, with ``-`` for a count run.json does not tell (a broken run tells neither)."""
    if epoch is None and epochs is None:
        return "-"
    return f"{'-' if epoch is None else epoch}/{'-' if epochs is None else epochs}"


@app.command("show")
def show(
    run: str = typer.Argument(..., help="Run id, name or 'last'."),
    json_out: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Show a run: status, progress, config and last metrics."""
    from aigc_cli.runs.store import resolve_run

    from aigc_cli.core.errors import RunError

    r = resolve_run(run)
    meta = r.read_meta()
    data = {k: meta.get(k) for k in FIELDS}
    data.update(path=str(r.path), updated=meta.get("updated"), error=meta.get("error"), stopped=meta.get("stopped"),
                world_size=meta.get("world_size", 1))  # processes of the last training (runs before it: 1)
    writer = r.writer()
    data["writer"] = writer
    try:
        data["config"] = r.read_config()
    except RunError as e:  # a damaged run is still shown, with what is wrong
        data["config"] = {}
        data["error"] = data["error"] or str(e)
    data["parent"] = data["config"].get("parent")  # the run this one descends from (lineage)
    if isinstance(data["parent"], dict):
        from aigc_cli.runs.lineage import parent_status

        data["parent"] = {**data["parent"], "state": parent_status(data["parent"])}
    rows = r.read_metrics()
    data["last_metrics"] = next((m for m in reversed(rows) if "fid" not in m), None)
    fids = [m for m in rows if "fid" in m]
    data["fid"] = fids[-1] if fids else None
    if json_out:
        common.print_json(data)
        return
    cfg = data["config"]
    items = [[k, data[k]] for k in ("id", "name", "family", "status", "stopped", "epoch", "epochs", "step",
                                    "world_size", "created", "updated", "dataset", "path", "error") if data.get(k) is not None]
    if writer:
        items.append(["writer", f"pid {writer.get('pid')} on {writer.get('host')}"])
    if data["parent"]:
        p = data["parent"]
        items.append(["parent", f"{p.get('run')} (weights sha256 {str(p.get('weights_sha256'))[:12]}...; {p['state']})"])
    source = cfg.get("source")
    if isinstance(source, dict):
        where = source.get("hub_id") or source.get("folder")
        items.append(["imported", f"{where} ({source.get('format')})" + (f" at {source['revision']}" if source.get("revision") else "")])
    tune = cfg.get("tune")
    if isinstance(tune, dict):
        items.append(["tune", _tune_summary(tune)])
    adapters = cfg.get("adapters")
    if isinstance(adapters, dict) and isinstance(adapters.get("layers"), dict):
        count = sum(len(v) for v in adapters["layers"].values() if isinstance(v, list))
        items.append(["adapters", f"LoRA rank {adapters.get('rank')}, alpha {adapters.get('alpha')}, on {count} layers of "
                      f"{', '.join(adapters['layers'])} (the base weights are the parent's)"])
    text = cfg.get("model", {}).get("text")
    if isinstance(text, dict):  # a captioned run: its text encoder, where its frozen weights came from
        source = f" from {text['source']}" if text.get("source") else ""
        items.append(["captions", f"{text.get('encoder')} text encoder{source}, {text.get('length')} tokens"])
    items += [[f"model.{k}", _short(v)] for k, v in cfg.get("model", {}).items() if k != "text"]
    items += [[f"train.{k}", _short(v)] for k, v in cfg.get("train", {}).items()]
    items.append(["seed", cfg.get("seed")])
    if data["last_metrics"]:
        items += [[f"last.{k}", v] for k, v in data["last_metrics"].items()]
    if data["fid"]:
        items.append(["fid", f"{data['fid']['fid']:.3f} (epoch {data['fid'].get('epoch')})"])
    common.table(None, ["field", "value"], items, result=True)


def _tune_summary(tune: dict) -> str:
    """A tuned run's method and what it learnt from, in a line."""
    prefs = tune.get("preferences")
    if isinstance(prefs, dict):
        return f"{tune.get('method')} on {prefs.get('pairs')} preference pairs of {prefs.get('path')}, beta {tune.get('beta')}"
    reward = tune.get("reward") if isinstance(tune.get("reward"), dict) else {}
    prompts = tune.get("prompts") or []
    return (f"{tune.get('method')} on {reward.get('spec') or reward.get('command')}, kl {tune.get('kl')}, "
            f"{tune.get('group')} completions of {tune.get('length')} tokens per prompt, "
            f"{f'{len(prompts)} prompts' if prompts else 'the empty prompt'}")


def _short(value):
    """A config value for the table: a tokenizer's vocabulary is summarised, not printed whole."""
    if value is None:
        return "-"  # null in config.json: not used by this run (a bpe run's alphabet)
    if isinstance(value, dict):
        return f"({len(value)} fields; --json shows them)"
    if isinstance(value, str) and len(value) > 120:
        return value[:117] + "..."
    return value


@app.command("plot")
def plot(
    runs: list[str] = typer.Argument(..., help="Run ids, names or 'last'; several are drawn on one figure."),
    output: str = typer.Option(None, "--output", "-o", help="PNG file to write (a .png name; '-': stdout)."),
    json_out: bool = typer.Option(False, "--json", help="Print the series as JSON instead."),
) -> None:
    """Plot training curves: losses and evaluation metrics over steps, one panel each."""
    from aigc_cli.cli.output import check_target, write_bytes
    from aigc_cli.core.errors import ConfigError
    from aigc_cli.runs.curves import curves_png, run_series
    from aigc_cli.runs.store import resolve_run

    resolved = list({r.id: r for r in map(resolve_run, runs)}.values())  # each run once
    if json_out:
        common.print_json({r.id: {q: [[s, v] for s, v in pts] for q, pts in run_series(r).items()} for r in resolved})
        return
    if output is None:
        raise ConfigError("say where the figure goes: -o curves.png (or -o - for stdout), or pass --json")
    target = check_target(output, "curves.png")
    if target is not None and not target.stream and target.suffix != ".png":
        # Line art is what PNG is for (JPEG would blur the lines and text): one format, named as such.
        raise ConfigError(f"-o {output}: runs plot writes PNG; use a .png name, or - for stdout")
    written = write_bytes(output, curves_png(resolved))
    common.info(f"curves of {', '.join(r.id for r in resolved)} in {written}")


@app.command("rm")
def rm(
    runs: list[str] = typer.Argument(..., help="Run ids, names or 'last'."),
    force: bool = typer.Option(
        False, "--force", "-f",
        help="Also remove runs being trained (their training is stopped first: it saves and exits 143), and bases "
        "of LoRA runs (which then cannot be loaded).",
    ),
) -> None:
    """Delete runs and all their files."""
    from aigc_cli.core.errors import RunError
    from aigc_cli.runs.store import BUSY_CONFIRM, remove_run, resolve_run

    targets = [resolve_run(r) for r in runs]  # resolve all first: a typo removes nothing
    if not force:
        from aigc_cli.runs.lineage import dependents

        leaving = {r.id for r in targets}
        for r in targets:
            needed = [d for d in dependents(r) if d not in leaving]
            if needed:
                raise RunError(f"{r.id} is the base of LoRA run{'s' if len(needed) > 1 else ''} {', '.join(needed)} "
                               "(whose adapters need its weights); remove those too, or pass --force to remove it "
                               "anyway")
        for r in targets:
            writer = r.writer(confirm=BUSY_CONFIRM)  # held that long: a writer, not a reader's probe
            if writer is not None:
                raise RunError(f"{r.id} is being trained (pid {writer.get('pid')} on {writer.get('host')}); "
                               "stop it first, or pass --force to stop it and remove the run")
    for r in targets:
        remove_run(r, force=force)
        common.info(f"removed {r.id}")


@app.command("path")
def path(run: str = typer.Argument(..., help="Run id, name or 'last'.")) -> None:
    """Print a run's folder (for `cd $(aigc runs path last)`)."""
    from aigc_cli.runs.store import resolve_run

    common.print_result(str(resolve_run(run).path))
