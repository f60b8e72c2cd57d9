"""The ``saliqa`` command line: parse arguments, call the API, show progress. Nothing else lives here."""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from saliqa.errors import SaliqaError
from saliqa.io.progress import report_to

app = typer.Typer(
    name="saliqa",
    help="Quality maps vs attribution maps under distortion: rate, split, train, evaluate, explain, report.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"saliqa {version('saliqa')}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what each stage does.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )


ConfigOption = Annotated[Path | None, typer.Option(help="Run config (TOML); default: the embedded demo.")]
OutOption = Annotated[Path | None, typer.Option(help="Run directory; default: runs/<config name>.")]


def _run_dir(config: Path | None, out: Path | None) -> Path:
    return out or Path("runs") / (config.stem if config else "demo")


def _report_stream() -> Any:
    """Where ``run`` reports: standard output when it is a file (``saliqa run > log``), else standard error,
    which also carries the live progress bars on a terminal."""
    return sys.stdout if not sys.stdout.isatty() else sys.stderr


@app.command()
def run(
    config: ConfigOption = None,
    out: OutOption = None,
    pretrained: Annotated[
        str | None,
        typer.Option(
            help="Initial classifier weights: random, imagenet (downloaded once) or a checkpoint path; "
            "overrides train.pretrained."
        ),
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Last stage to run (default: all); see `saliqa stages`.")
    ] = None,
    trust_checkpoint: Annotated[
        bool,
        typer.Option(
            help="Read the initial weights file with the full unpickler, which runs code inside it: only for a "
            "file from a source you trust (train.trust_checkpoint)."
        ),
    ] = False,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="Replace one setting, SECTION.KEY=VALUE (TOML value), e.g. explain.sample=16."
        ),
    ] = None,
    engine: Annotated[
        str | None,
        typer.Option(help="Where the per-image stages run: local or ray (needs saliqa[ray]); engine.kind."),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(help="Ray cluster to join, e.g. auto (default: Ray on this machine); engine.address."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress.")] = False,
) -> None:
    """Run every stage that is not up to date (resumes a killed run, on either engine)."""
    from saliqa.config import config_from_dict, config_to_dict, load_config, with_overrides
    from saliqa.pipeline.run import run_pipeline

    engine_settings = [f"engine.kind={json.dumps(engine)}"] if engine is not None else []
    if address is not None:
        engine_settings.append(f"engine.address={json.dumps(address)}")
    resolved = with_overrides(load_config(config), [*(overrides or []), *engine_settings])
    if pretrained is not None or trust_checkpoint:
        values = config_to_dict(resolved)
        if pretrained is not None:
            values["train"]["pretrained"] = pretrained
        values["train"]["trust_checkpoint"] = values["train"]["trust_checkpoint"] or trust_checkpoint
        resolved = config_from_dict(values, origin="(command line)")
    out = _run_dir(config, out)
    stream = _report_stream()
    with report_to(stream):
        results = run_pipeline(resolved, out, until=until, progress=not quiet)
    for result in results:
        state = f"done in {result.seconds:.1f} s" if result.ran else "up to date, skipped"
        print(f"{result.name}: {state}", file=stream)
        for message in result.messages:
            print(f"  {_printable(message)}", file=stream)
    print(f"run directory: {out}", file=stream, flush=True)


@app.command()
def stages(
    config: ConfigOption = None,
    out: OutOption = None,
    markdown: Annotated[bool, typer.Option(help="Print the stage table of the README instead.")] = False,
) -> None:
    """Show the stages of a config in order: what each reads and writes, and whether it is up to date."""
    from saliqa.config import load_config
    from saliqa.pipeline.run import stage_states, stages_markdown

    if markdown:
        typer.echo(stages_markdown(), nl=False)
        return
    out = _run_dir(config, out)
    for state in stage_states(load_config(config), out):
        why = f" ({state.why})" if state.why else ""
        typer.echo(f"{state.stage.name}: {state.state}{why}")
        typer.echo(f"  {state.stage.does}")
        typer.echo(f"  reads:  {', '.join(state.reads)}")
        typer.echo(f"  writes: {', '.join(state.writes)}")
    typer.echo(f"run directory: {out}")


@app.command()
def explain(
    image: Annotated[Path, typer.Argument(help="An image file.")],
    checkpoint: Annotated[
        Path, typer.Option(help="A saliqa classifier checkpoint (e.g. runs/demo/model/best.pt).")
    ],
    corruption: Annotated[str, typer.Option(help="Corruption name (see `saliqa config`).")],
    severity: Annotated[int, typer.Option(min=1, max=5, help="Severity 1-5.")],
    iqa: Annotated[str, typer.Option(help="Quality model.")] = "piqe",
    method: Annotated[str, typer.Option(help="Attribution method.")] = "gradcam",
    target: Annotated[str, typer.Option(help="prediction (the clean crop's) or label.")] = "prediction",
    label: Annotated[str | None, typer.Option(help="The image's class, for --target label.")] = None,
    image_id: Annotated[
        str | None, typer.Option(help="Id keying the random draws (a run's id reproduces its crop).")
    ] = None,
    crop: Annotated[int, typer.Option(min=32, help="Centre crop side after distortion.")] = 224,
    seed: Annotated[int, typer.Option(help="The run seed.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    out: Annotated[
        Path | None, typer.Option(help="Panel PNG; default: <image>_<corruption>_<severity>.png.")
    ] = None,
) -> None:
    """One image as the explain stage sees it: the study's panel and its agreement numbers."""
    from saliqa.api import explain_image

    out = out or Path(f"{image.stem}_{corruption}_{severity}.png")
    numbers = explain_image(
        image, checkpoint, corruption=corruption, severity=severity, iqa=iqa, method=method, target=target,
        label=label, image_id=image_id, crop=crop, seed=seed, device=device, out=out,
    )  # fmt: skip
    for key, value in numbers.items():
        shown = f"{value:.4f}" if isinstance(value, float) else _printable(value)
        typer.echo(f"{key}: {shown}")


@app.command()
def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="A run directory, or several to compare.")],
    out: Annotated[Path | None, typer.Option(help="Where the comparison of several runs goes.")] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="html, or md for the tables as Markdown as well.")
    ] = "html",
) -> None:
    """Rebuild a run's report.html (and the CSV twins of its tables) from its artifacts alone, or put several
    runs side by side (--out DIR)."""
    from saliqa.errors import RunDirError
    from saliqa.pipeline.compare_runs import compare_runs
    from saliqa.pipeline.layout import RunLayout
    from saliqa.pipeline.stages.report import write_report

    if fmt not in ("html", "md"):
        raise typer.BadParameter("--format must be html or md")
    for run_dir in run_dirs:
        if (
            not (run_dir / RunLayout.RUN_RECORD).is_file()
            and not (run_dir / RunLayout.STAGE_RECORDS).is_dir()
        ):
            raise RunDirError(f"{run_dir} is not a saliqa run directory (no run.json or stages/)")
    if len(run_dirs) > 1:
        if out is None:
            raise typer.BadParameter("comparing several runs needs --out DIR")
        typer.echo(f"report: {compare_runs(run_dirs, out)}")
        return
    typer.echo(f"report: {write_report(RunLayout(run_dirs[0]), markdown=fmt == 'md')}")


def _json_row(row: dict[str, Any]) -> str:
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
    return json.dumps(clean, default=lambda v: v.item() if hasattr(v, "item") else str(v))


@app.command()
def rate(
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders (searched recursively).")],
    iqa: Annotated[str, typer.Option(help="Quality model.")] = "piqe",
    out: Annotated[
        Path | None, typer.Option(help="Write ratings.parquet, quality_maps/ and figures here.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object per image.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    batch_size: Annotated[int, typer.Option(min=1, help="Images of equal size rated together.")] = 16,
    workers: Annotated[int, typer.Option(min=0, help="Decoding threads.")] = 2,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Rate image files with a no-reference quality model."""
    from saliqa.api import collect_images, iter_ratings
    from saliqa.api import rate as rate_images
    from saliqa.config import config_from_dict
    from saliqa.io.progress import progress_bar

    config_from_dict({"rate": {"iqa": iqa, "device": device}}, origin="(command line)")
    table = collect_images(paths)
    emit = _echo_json if as_json else _echo_text
    if out is not None:
        ratings = rate_images(
            table, iqa=iqa, out=out, device=device, batch_size=batch_size, workers=workers, progress=not quiet
        )
        for row in ratings.to_dict("records"):
            emit(row)
        return
    with progress_bar(f"rate ({iqa})", total=len(table), enabled=not quiet) as bar:
        for rated in iter_ratings(table, iqa=iqa, device=device, batch_size=batch_size, workers=workers):
            bar.advance()
            emit(rated.row)


def _echo_json(row: dict[str, Any]) -> None:
    typer.echo(_json_row(row))


def _printable(text: object) -> str:
    """``text`` on one line: control characters (a newline or tab in a file name) escaped as in Python."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _echo_text(row: dict[str, Any]) -> None:
    ok = row["status"] == "ok"
    what = f"{row['score']:8.3f}  {row['quality']:6.2f}  {row['category']}" if ok else row["reason"]
    typer.echo(f"{_printable(row['image_id'])}\t{row['status']}\t{_printable(what)}")


@app.command("config")
def show_config(
    config: Annotated[Path | None, typer.Argument(help="A config to validate; default: the demo.")] = None,
) -> None:
    """Print a run config with every default filled in (a starting point for your own)."""
    from saliqa.config import dump_config, load_config

    typer.echo(dump_config(load_config(config)), nl=False)


weights_app = typer.Typer(
    help="Parameter files of the quality models (PaQ-2-PiQ, NIQE, BRISQUE): where they are, fetching them.",
    no_args_is_help=True,
)
app.add_typer(weights_app, name="weights")


@weights_app.command("download")
def weights_download(
    model: Annotated[str, typer.Argument(help="paq2piq, niqe or brisque.")],
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir", help="Save here; default: $SALIQA_WEIGHTS_DIR, else the torch hub cache's saliqa/."
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Download a quality model's parameter files once (resumable, size/hash checked); prints their paths."""
    from saliqa.iqa.weights import download_model

    for path in download_model(model, dest_dir=directory, progress=not quiet):
        typer.echo(str(path))


@weights_app.command("where")
def weights_where() -> None:
    """Print, per parameter file, the path found or every place looked."""
    from saliqa.iqa.weights import WEIGHTS, weights_status

    for status in weights_status():
        if status.path is not None:
            typer.echo(f"{status.name}\t{status.path}")
        else:
            command = f"saliqa weights download {WEIGHTS[status.name].model}"
            typer.echo(f"{status.name}\tnot found ({command}); looked in: {', '.join(status.looked)}")


data_app = typer.Typer(
    help="Datasets fetched by name (MIT Indoor 67) into a data cache: downloading them, listing the cache.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")
DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--dir", help="Data cache folder; default: $SALIQA_DATA_DIR, else the user cache's saliqa/data."
    ),
]


@data_app.command("download")
def data_download(
    name: Annotated[str, typer.Argument(help="A dataset of the catalog (see `saliqa data list`): mit67.")],
    directory: DataDirOption = None,
    keep_archive: Annotated[
        bool, typer.Option("--keep-archive", help="Keep the downloaded archive after unpacking it.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Download a dataset once (resumable, checksum verified before unpacking); prints its folder."""
    from saliqa.data.catalog import download_dataset

    root = download_dataset(name, directory=directory, keep_archive=keep_archive, progress=not quiet)
    typer.echo(str(root))


@data_app.command("list")
def data_list(directory: DataDirOption = None) -> None:
    """Print each dataset in the data cache (state, size, folder), then the names that can be downloaded."""
    from saliqa.data.catalog import CATALOG, cached_datasets, data_dir

    base = directory if directory is not None else data_dir()
    typer.echo(f"data cache: {base}")
    for item in cached_datasets(base):
        state = "complete" if item.complete else f"incomplete: it {item.problem}"
        if not item.path.exists():
            again = f"saliqa data download {item.name}" + (f" --dir {directory}" if directory else "")
            state = f"not unpacked yet (a download was started: `{again}` resumes it)"
        pending = f"; {item.downloaded / 1e6:.1f} MB in downloads" if item.downloaded else ""
        typer.echo(f"{item.name}\t{state}\t{item.size / 1e6:.1f} MB{pending}\t{item.path}")
    for name, entry in sorted(CATALOG.items()):
        size = f", {entry.approx_size}" if entry.approx_size else ""
        typer.echo(f"downloadable: {name}\t{entry.title}{size}\t(saliqa data download {name})")


iqa_app = typer.Typer(
    help="Quality judges against human opinion: how far a judge agrees with MOS on a rated set.",
    no_args_is_help=True,
)
app.add_typer(iqa_app, name="iqa")


@iqa_app.command("validate")
def iqa_validate(
    iqa: Annotated[str, typer.Option(help="Quality model: piqe, niqe, brisque or paq2piq.")],
    data: Annotated[
        str,
        typer.Option(help="clive, koniq10k, or a CSV with the header path,mos[,std] (paths relative to it)."),
    ],
    root: Annotated[
        Path | None,
        typer.Option(help="Folder of clive or koniq10k; default: the data cache (see `saliqa data list`)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Output folder; default: runs/iqa-validate/<iqa>-<data>.")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    bootstrap: Annotated[
        int, typer.Option(min=0, help="Bootstrap resamples of the pictures for the 95% intervals (0: none).")
    ] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap resamples.")] = 0,
    batch_size: Annotated[int, typer.Option(min=1, help="Pictures of equal size scored together.")] = 16,
    workers: Annotated[int, typer.Option(min=0, help="Decoding threads.")] = 2,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Score every picture of a set with MOS and print SROCC, KROCC, PLCC and RMSE (raw and after the VQEG
    logistic) with bootstrap intervals; writes scores, metrics, categories, a scatter plot and provenance."""
    from saliqa.pipeline.validate_iqa import validate_quality_model

    result = validate_quality_model(
        data, iqa, root=root, out=out, device=device, n_boot=bootstrap, seed=seed, batch_size=batch_size,
        workers=workers, progress=not quiet,
    )  # fmt: skip
    typer.echo(_printable_lines(result.table()))


def _printable_lines(text: str) -> str:
    return "\n".join(_printable(line) for line in text.splitlines())


@iqa_app.command("train")
def iqa_train(
    labels: Annotated[
        Path,
        typer.Option(
            help="Label CSV: FLIVE format (picture + 3 patch boxes with MOS) or picture-only path,mos."
        ),
    ],
    images: Annotated[Path, typer.Option(help="Folder the label file's picture names are under.")],
    out: Annotated[Path, typer.Option(help="Output folder: best.pt, last.pt, train_log, curves.")],
    init: Annotated[
        str, typer.Option(help="imagenet (the recipe), random, official (the release's weights) or a file.")
    ] = "imagenet",
    epochs: Annotated[int, typer.Option(min=1, help="Epochs (recipe: 10).")] = 10,
    batch_size: Annotated[
        int, typer.Option(min=2, help="Pictures per step (recipe: 120; use fewer on a CPU or a small GPU).")
    ] = 120,
    lr: Annotated[
        float, typer.Option(help="The head's rate (recipe: 3e-3); the peak rate for onecycle.")
    ] = 3e-3,
    body_lr_factor: Annotated[float, typer.Option(help="The body's rate / the head's (recipe: 0.1).")] = 0.1,
    weight_decay: Annotated[float, typer.Option(help="Decoupled weight decay (recipe: 0.01).")] = 1e-2,
    schedule: Annotated[str, typer.Option(help="constant (the recipe) or onecycle.")] = "constant",
    val_fraction: Annotated[
        float, typer.Option(help="Held out for validation when the labels have no is_valid column.")
    ] = 0.1,
    max_side: Annotated[
        int | None, typer.Option(help="Downscale pictures whose longer side exceeds this (boxes follow).")
    ] = None,
    hflip: Annotated[bool, typer.Option("--hflip", help="Random horizontal flips (seeded).")] = False,
    scale: Annotated[
        tuple[float, float],
        typer.Option(help="The MOS scale's ends, mapped onto FLIVE's 0-100 (KonIQ-10k: --scale 1 5)."),
    ] = (0.0, 100.0),
    seed: Annotated[
        int, typer.Option(help="Seed of the start, the split, the order, flips and dropout.")
    ] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    workers: Annotated[int, typer.Option(min=0, help="Loader processes decoding pictures.")] = 2,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train or fine-tune PaQ-2-PiQ (RoIPool) in plain PyTorch; the defaults are the official recipe. Run the same
    command again to resume a killed training. Prints the best epoch and the name to rate with."""
    from saliqa.iqa.training import train_paq2piq

    if schedule not in ("constant", "onecycle"):
        raise typer.BadParameter(f"--schedule must be constant or onecycle, not {schedule!r}")
    with report_to(_report_stream()):
        result = train_paq2piq(
            labels, images, out, init=init, epochs=epochs, batch_size=batch_size, lr=lr,
            body_lr_factor=body_lr_factor, weight_decay=weight_decay, schedule=schedule,  # type: ignore[arg-type]
            val_fraction=val_fraction, max_side=max_side, hflip=hflip, scale=scale, seed=seed, device=device,
            workers=workers, progress=not quiet,
        )  # fmt: skip
    typer.echo(result.labels.summary())
    typer.echo(f"trained {result.n_train} pictures, validated on {result.n_val}; start: {result.init}")
    if result.resumed_epochs:
        typer.echo(f"resumed after epoch {result.resumed_epochs}")
    best = result.best_metrics
    typer.echo(
        f"best epoch {result.best_epoch}: validation SROCC {best['val_srocc']:.4f}, PLCC {best['val_plcc']:.4f}"
    )
    typer.echo(f"log: {result.out_dir / 'train_log.csv'}; curves: {result.out_dir / 'training_curves.png'}")
    typer.echo(f'rate with it: iqa = "{result.quality_model}"')


def main(argv: list[str] | None = None) -> int:
    """Entry point: errors end with one line on stderr and a non-zero status (2 for bad usage)."""
    try:
        code = app(args=argv, prog_name="saliqa", standalone_mode=False)
    except typer.TyperException as error:  # bad usage: unknown option, missing argument, bad value
        print(f"saliqa: error: {error.format_message()}", file=sys.stderr)
        return error.exit_code or 2
    except SaliqaError as error:  # details on one line, so the error stays one line
        detail = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
        print(f"saliqa: error: {detail}", file=sys.stderr)
        return 1
    except OSError as error:  # a path the user gave that the system refuses (permissions, full disk, ...)
        print(f"saliqa: error: {error}", file=sys.stderr)
        return 1
    except (typer.Abort, KeyboardInterrupt):
        print("saliqa: interrupted", file=sys.stderr)
        return 130
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
