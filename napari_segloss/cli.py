"""The ``segloss`` command: ``train``, ``predict``, ``evaluate``, ``compare``, ``configs`` and
``losses``.

Examples::

    segloss train --config quickstart --set train.epochs=2   # a shipped config, by name
    segloss configs                                          # lists them; NAME prints one
    segloss losses pm_dice                    # its parameters and a config's loss: section
    segloss predict --checkpoint runs/quickstart/best.pt --input img.jpg DIR/ --output preds/
    segloss evaluate --pred preds/ --gt data/masks --tolerance 2
    segloss compare --config training/configs/kvasir_pm_dice.yaml --losses ce dice pm_dice \\
        --seeds 0 1 2 --set data.root=/data/kvasir-seg --output compare/kvasir

On Linux/glibc the command keeps freed memory for reuse (``engine.allocator.tune_malloc``;
``SEGLOSS_MALLOC_TUNING=0`` turns it off): large CPU tensors then stop page-faulting on every
step.

Output follows the usual split: stdout carries what a command produced (``train``'s end
summary, the tables of ``evaluate`` and ``compare``, the closing line of each command, the
``configs`` listing), stderr what it says while it works (start lines and the settings adapted
to this machine, a line per run or per file, progress bars, notes, errors), so ``> FILE`` or a
pipe keeps the results and the terminal still shows the progress.

Bad input (an invalid config key, a missing file, an unreadable checkpoint) ends with a one-line
``segloss <command>: error: ...`` on stderr and exit code 2; ``--debug`` shows the traceback.
Ctrl-C (or SIGTERM) stops ``train`` and ``compare`` after the current step (or validation batch)
with a resumable checkpoint and exit code 130; a training stopped by a non-finite loss exits with 1.

Config conveniences handled here (so that YAML files stay portable):

* ``data.root: bundled:kvasir`` (or ``bundled:kvasir_train``, ``bundled:acdc``) is the sample data
  shipped inside the package (resolved by ``data.factory.resolve_root``), so the quickstart needs
  no download.
* ``data.root: ???`` is a placeholder the user must fill (``--set data.root=/path``); it is
  reported as such instead of as a missing folder called ``???``.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._cli_io import (
    CLIError,
    check_prediction_paths,
    expand_inputs,
    read_input,
    read_label_pairs,
    spacing_note,
    write_per_image_csv,
    write_prediction,
)
from ._cli_losses import add_losses_parser
from .engine.allocator import tune_malloc
from .engine.events import (  # cheap
    OUT_OF_MEMORY_HINTS,
    duration_text,
    out_of_memory_text,
    stopped_text,
)

if TYPE_CHECKING:
    from .engine.config import TrainConfig
    from .engine.events import CompareEvent, TrainDone, TrainStart

# Each command imports what it needs when it runs: `segloss --help`, a usage error or a missing
# config file answer before torch, torchvision, smp or the image readers load, and `segloss
# evaluate` (numpy metrics) never loads torch (timings in benchmarks/RESULTS.md).

__all__ = ["build_parser", "main", "prepare_config"]

PLACEHOLDERS = ("???", "", "CHANGE_ME", "SET_ME")


# ----------------------------------------------------------------------------------------------
# config preparation


def _check_root(value: Any, where: str) -> None:
    if value is None or (isinstance(value, str) and value.strip() in PLACEHOLDERS):
        raise CLIError(
            f"config key 'data.root' is not set ({where}); pass --set data.root=/path/to/data "
            "(a folder with the images/ and masks/ sub-folders, or the NIfTI dataset root)"
        )


def prepare_config(
    config: str | Path, overrides: Sequence[str] = ()
) -> tuple[dict[str, Any], list[str]]:
    """Read a YAML config (a path or a shipped config's name, e.g. ``quickstart``) and check
    that ``data.root`` is not a placeholder (``???``).

    Returns the config as a dict and the overrides, ready for
    ``engine.config.load_config(tree, overrides)``, which validates everything else.
    """
    from .engine.config import find_config, read_config_file

    path = find_config(config)  # a file, or a shipped config's name (`segloss configs`)
    # the engine's reader, so a file means what it means to load_config (1e-6 is a float)
    tree = read_config_file(path)
    roots = [
        o.partition("=")[2].strip() for o in overrides if o.partition("=")[0].strip() == "data.root"
    ]
    if roots:
        _check_root(roots[-1], "from --set")
    elif isinstance(tree.get("data"), dict):
        _check_root(tree["data"].get("root"), f"in {path}")
    return tree, list(overrides)


def _load_cfg(config: str | Path, overrides: Sequence[str]) -> TrainConfig:
    tree, overrides = prepare_config(config, overrides)
    from .engine.config import load_config

    return load_config(tree, overrides)


# ----------------------------------------------------------------------------------------------
# train


def _print_eval_summary(run_dir: Path) -> None:
    from .engine.compare_results import metrics_from_eval

    path = run_dir / "eval.json"
    if not path.is_file():
        print(f"  (no eval.json in {run_dir})")
        return
    try:
        data = json.loads(path.read_text())
        metrics, _ = metrics_from_eval(data)
    except ValueError as exc:
        print(f"  eval.json: {exc}")
        return
    # NaN is undefined (skipped); an infinite HD95 is a result (no predicted surface): "inf"
    text = "  ".join(f"{k} {v:.2f}" for k, v in metrics.items() if not math.isnan(v))
    split = f"{data.get('split', 'held-out')} split, {data.get('num_images', '?')} image(s)"
    units = {
        "voxel spacing": "in the volumes' spacing units, usually mm",
        "pixels": "in pixels",
    }.get(data.get("distance_units", ""), "in pixels or spacing units")
    size = data.get("scored_size")
    if size and data.get("distance_units") == "pixels":  # not comparable with `evaluate`'s
        units = f"in pixels of the {size[0]}x{size[1]} images resized to data.size"
    print(f"  {split} (% except mHD95, {units}): {text}")
    print(f"  per-class metrics: {path}")


def print_done(done: TrainDone, minutes: float) -> None:
    """The end-of-run summary ``segloss train`` prints."""
    state = stopped_text(done.reason) if done.stopped else "finished"
    print(f"segloss train: {state} in {duration_text(minutes * 60)}")
    print(f"  run dir: {done.run_dir}")
    if done.checkpoint is not None:
        print(f"  checkpoint: {done.checkpoint}")
    if done.best_checkpoint is not None and not done.validated:
        # data.val_fraction: 0: nothing selected these weights, so do not call them "best"
        print(
            f"  last weights: {done.best_checkpoint} (no validation split: no validation ran, "
            "nothing selected these weights)"
        )
    elif done.best_checkpoint is not None:
        print(f"  best checkpoint: {done.best_checkpoint}")
    if done.best_dice is not None:
        print(f"  best validation Dice: {done.best_dice:.4f}")
    if done.interrupted and done.stopped and done.checkpoint is not None:
        # Ctrl-C: say how to go on (eval.json comes at the end of a completed run)
        print("  to continue: the same command with --resume (eval.json follows at the end)")
        return
    if not done.validated and not done.stopped and not (done.run_dir / "eval.json").is_file():
        print("  no eval.json: nothing held out to score (data.test_root names a held-out folder)")
        return
    _print_eval_summary(done.run_dir)


def run_details(event: TrainStart) -> str:
    """A run's data, steps, device and precision, as the start lines of ``train`` and
    ``compare`` say them.

    ``train.amp: true`` on a machine without CUDA trains in float32 (autocast is CUDA-only
    here); said once here rather than left for the user to infer from the speed.
    """
    resumed = f", resuming at step {event.iteration}" if event.iteration else ""
    precision = event.precision
    if event.amp_requested and precision == "float32":
        precision += " (train.amp is on, but mixed precision runs on CUDA only)"
    elif event.amp_requested:
        precision += " autocast (train.amp)"
    procs = f" x {event.world_size} processes" if event.world_size > 1 else ""
    return (
        f"{event.train_size} training / {event.val_size} validation item(s), "
        f"{event.max_iterations} step{'' if event.max_iterations == 1 else 's'}{resumed} on "
        f"{event.device}{procs}, {precision}"
    )


def start_line(event: TrainStart) -> str:
    """What ``segloss train`` says on stderr before the first step: data, device, precision,
    run dir, then each setting adapted to this machine (``TrainStart.notes``) on a line of its
    own."""
    line = f"segloss train: {run_details(event)}; run dir {event.run_dir}"
    return "\n".join([line, *(f"  {note}" for note in event.notes)])


def _say(text: str) -> None:
    """A progress or diagnostic line: stderr, flushed, so that it lands before the bars that
    follow and does not mix into the results on stdout."""
    print(text, file=sys.stderr, flush=True)


def cmd_train(args: argparse.Namespace) -> int:
    if args.resume and args.init_checkpoint:
        # said here in option names: the engine's message speaks to Python callers
        raise CLIError(
            "--resume and --init-checkpoint cannot be combined: --resume continues the run in "
            "the output folder from its checkpoint.pt; --init-checkpoint starts a new run from "
            "other weights"
        )
    cfg = _load_cfg(args.config, args.overrides)
    if args.init_checkpoint and not Path(args.init_checkpoint).is_file():
        raise CLIError(f"--init-checkpoint: checkpoint not found: {args.init_checkpoint!r}")
    from .engine.distributed import is_main_process
    from .engine.events import TrainStart
    from .engine.training import train

    def on_event(event: object) -> None:
        if isinstance(event, TrainStart) and is_main_process():
            _say(start_line(event))  # before the progress bar starts drawing

    start = time.perf_counter()
    done = train(
        cfg,
        init_checkpoint=Path(args.init_checkpoint) if args.init_checkpoint else None,
        resume=args.resume,
        progress=not args.no_progress,
        on_event=on_event,
    )
    if not is_main_process():
        return 0
    print_done(done, (time.perf_counter() - start) / 60)  # says where the checkpoint is
    if done.interrupted and not done.stopped:  # during eval.json's last batch or its writing
        _say("segloss train: the Ctrl-C came after the last step: the run finished anyway")
    elif done.interrupted:  # Ctrl-C / SIGTERM: main() prints "interrupted" and returns 130,
        raise KeyboardInterrupt  # as for compare (the conventional code for SIGINT)
    return 1 if done.stopped else 0  # stopped otherwise: a non-finite loss


# ----------------------------------------------------------------------------------------------
# predict


def cmd_predict(args: argparse.Namespace) -> int:
    if not 0.0 <= args.overlap < 1.0:  # checked by predict() too, but only once per file
        raise CLIError(f"--overlap: expected a fraction in [0, 1), got {args.overlap}")
    if args.batch_size < 1:
        raise CLIError(f"--batch-size: expected a positive integer, got {args.batch_size}")
    ckpt = Path(args.checkpoint)
    if ckpt.is_dir():
        inside = ", ".join(sorted(p.name for p in ckpt.glob("*.pt"))) or "none"
        raise CLIError(
            f"--checkpoint: {str(ckpt)!r} is a folder; give the .pt file in it ({inside})"
        )
    if not ckpt.is_file():
        raise CLIError(f"checkpoint not found: {str(ckpt)!r}")
    files = expand_inputs(args.input)
    out = Path(args.output)
    folders = [Path(item) for item in args.input if Path(item).is_dir()]
    check_prediction_paths(out, files, fmt=args.format, probs=args.probs, input_folders=folders)
    from .engine.checkpoint import load_model
    from .engine.inference import predict, resolve_device

    device = resolve_device(args.device)
    model, meta = load_model(ckpt, device=str(device))
    # Every input is checked before anything is written: a bad file in a folder leaves no
    # half-finished output behind.
    checks = {"fill_nonfinite": args.fill_nonfinite, "to_grey": args.to_grey}
    for path in files:
        read_input(path, meta, **checks)
    tile = tuple(args.tile) if args.tile else None
    if tile and "crop" in tile and len(tile) > 1:
        raise CLIError(f"--tile: give 'crop' alone or sizes alone, got {tile}")
    kw: dict[str, Any] = {
        "meta": meta, "tile": "crop" if tile == ("crop",) else tile, "overlap": args.overlap,
        "device": device,
        "batch_size": args.batch_size, "amp": not args.no_amp,
        "resize": False if args.no_resize else None,
    }  # fmt: skip
    for n, path in enumerate(files, 1):
        array, img = read_input(path, meta, **checks, report=True)
        # checked (and converted) by read_input; a NIfTI volume is a stack of grey slices
        try:
            labels, probs = predict(model, array, rgb=False if img is not None else None, **kw)
        except ValueError as exc:  # e.g. a 2D image for a 3D model: name the file
            raise CLIError(f"input {str(path)!r}: {exc}") from None
        # made at the first write: a refusal of the first prediction (e.g. tile sizes that
        # do not fit the model) leaves no empty folder
        out.mkdir(parents=True, exist_ok=True)
        label_path = write_prediction(
            out, path, labels, probs if args.probs else None, img=img, meta=meta, fmt=args.format
        )
        fg = float((labels > 0).mean()) * 100
        # as the training datasets read grey images; said, since it may be a wrong file
        grey = img is None and array.ndim == 2 and int(meta.get("in_channels") or 3) == 3
        note = "; a grey image, repeated to the model's 3 colour channels" if grey else ""
        _say(f"[{n}/{len(files)}] {path.name} -> {label_path.name} (foreground {fg:.1f} %{note})")
    print(f"segloss predict: wrote {len(files)} label file(s) to {out}")
    return 0


# ----------------------------------------------------------------------------------------------
# evaluate


def _split_class_names(names: Sequence[str] | None) -> tuple[str, list[str]]:
    """``(label 0's name, names of labels 1, 2, ...)``: a leading "background" (or "bg") is
    label 0's, as in ``data.class_names``, so the config's list can be pasted as it is
    (before, it shifted every name one class up, silently)."""
    names = list(names or [])
    if names and names[0].lower() in ("background", "bg"):
        return names[0], names[1:]
    return "background", names


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .metrics import aggregate, evaluate, to_csv, to_markdown

    if args.num_classes is not None and args.num_classes < 2:  # was taken as 2, silently
        raise CLIError(
            f"--num-classes: expected 2 or more (it counts the background: 2 for binary "
            f"masks), got {args.num_classes}"
        )
    pairs, unused = read_label_pairs(args.pred, args.gt)
    num_classes = args.num_classes or int(max(max(p.max(), g.max()) for _, p, g, _ in pairs)) + 1
    background, foreground = _split_class_names(args.class_names)
    named = len(foreground)
    if not args.num_classes:  # a named class may be absent from every mask: still reported
        num_classes = max(num_classes, named + 1)
    num_classes = max(num_classes, 2)
    if named > num_classes - 1:
        raise CLIError(
            f"--class-names: got {named} names for {num_classes - 1} class(es) (--num-classes "
            f"{num_classes} counts the background): {' '.join(foreground)}"
        )
    results: list[dict[int, dict[str, float]]] = []
    used: list[tuple[float, ...] | None] = []
    for stem, pred, gt, gt_spacing in pairs:
        spacing = tuple(args.spacing) if args.spacing else gt_spacing
        used.append(spacing)
        if spacing is not None and len(spacing) != gt.ndim:
            raise CLIError(
                f"--spacing: expected {gt.ndim} values for {stem} (shape {gt.shape}), "
                f"got {len(spacing)}"
            )
        results.append(
            evaluate(
                pred, gt, num_classes=num_classes, spacing=spacing, tolerance=args.tolerance,
                include_background=args.include_background,
            )
        )  # fmt: skip
    out = Path(args.output) if args.output else Path(args.pred)
    out.mkdir(parents=True, exist_ok=True)
    write_per_image_csv(
        out / "per_image.csv", [(p[0], r) for p, r in zip(pairs, results, strict=True)]
    )
    names = {i + 1: name for i, name in enumerate(foreground)}
    if args.include_background:
        names[0] = background
    table = aggregate(results, class_names=names or None)
    to_csv(table, out / "summary.csv")
    text = to_markdown(table) + (
        f"\nNSD tolerance {args.tolerance} "
        f"({spacing_note(used, bool(args.spacing))}); "
        "mean ± population std (ddof=0) over images; NaN (undefined, 0/0: class absent from both "
        "masks, precision of an empty prediction, recall of an empty reference) skipped, counted"
        + (  # the mean rows' ± is not over images: say so
            "; 'mean' rows: mean ± std of the foreground classes' means (PM-Dice tables' mean)"
            if any(r["class"] == "mean" for r in table)
            else ""
        )
        + ".\n"
    )
    (out / "summary.md").write_text(text)
    print(text, end="")
    note = f" ({unused} ground-truth file(s) without a prediction ignored)" if unused else ""
    print(
        f"segloss evaluate: {len(pairs)} image(s){note}; wrote per_image.csv, summary.csv, summary.md to {out}"
    )
    return 0


# ----------------------------------------------------------------------------------------------
# compare


class CompareLog:
    """What ``segloss compare`` says on stderr while it runs (stdout keeps the table): a line
    when each run starts and ends (time, held-out mDice), the runs' data, steps and device
    when they first show or change, and each note (``TrainStart.notes``) once."""

    def __init__(self) -> None:
        self.details = ""
        self.notes: set[str] = set()

    def lines(self, event: CompareEvent) -> list[str]:
        from .engine.compare import compare_log_line
        from .engine.events import CompareRunProgress, TrainStart

        if isinstance(event, CompareRunProgress) and isinstance(event.event, TrainStart):
            out = []
            details = run_details(event.event)
            if details != self.details:  # the same for every run of a grid, but a resume
                self.details = details
                out.append(f"  {details}")
            out += [f"  {n}" for n in event.event.notes if n not in self.notes]
            self.notes.update(event.event.notes)
            return out
        line = compare_log_line(event)
        return [line] if line else []


def cmd_compare(args: argparse.Namespace) -> int:
    """A thin consumer of ``engine.compare.iter_compare``: its progress lines on stderr, then
    the table on stdout."""
    from .engine.compare import iter_compare
    from .engine.distributed import is_main_process
    from .engine.events import CompareDone

    tree, overrides = prepare_config(args.config, args.overrides)
    done: CompareDone | None = None
    events = iter_compare(
        tree,
        args.losses,
        args.seeds,
        args.output,
        overrides,
        title=args.title or Path(args.config).stem,
        progress=args.progress,
    )
    log = CompareLog()
    for event in events:
        for line in log.lines(event) if is_main_process() else []:
            _say(line)
        if isinstance(event, CompareDone):
            done = event
    if done is None or not is_main_process():
        return 0
    if done.interrupted:
        raise KeyboardInterrupt  # the run saved a checkpoint; main() prints and returns 130
    print(done.markdown, end="")
    n_ok = done.statuses.count("ok")
    print(
        f"segloss compare: {n_ok}/{len(done.statuses)} run(s) ok; "
        f"results.csv, results.md, runs.csv in {args.output}"
    )
    return 0 if n_ok == len(done.statuses) else 1


# ----------------------------------------------------------------------------------------------
# configs


def _config_summary(path: Path) -> str:
    """The first sentence of a config's leading comment, and what its ``data.root`` needs."""
    from .engine.config import read_config_file

    comment = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        comment.append(line.lstrip("#").strip())
    # its title: the comment's first sentence up to a colon ("Kvasir-SEG with the ... protocol")
    first = " ".join(comment).split(". ")[0].split(": ")[0].rstrip(".")
    if len(first) > 80:  # drop "(Hosseini 2025, sections ...)" before cutting
        first = re.sub(r" \([^)]*\)", "", first)
    if len(first) > 80:
        first = first[:77].rstrip() + "..."
    root = (read_config_file(path).get("data") or {}).get("root")
    needs = "--set data.root=PATH" if not root or root in PLACEHOLDERS else f"data.root {root}"
    return f"{first} [{needs}]"


def cmd_configs(args: argparse.Namespace) -> int:
    """List the shipped configs, or print one (``segloss configs NAME > mine.yaml``)."""
    from .engine.config import SHIPPED_CONFIGS_DIR, shipped_configs

    shipped = shipped_configs()
    if args.name is None:
        print("shipped configs (segloss train --config NAME; segloss configs NAME > mine.yaml)")
        width = max((len(n) for n in shipped), default=0)
        for name, path in shipped.items():
            print(f"  {name:<{width}}  {_config_summary(path)}")
        print(f"folder: {SHIPPED_CONFIGS_DIR}")
        return 0
    name = args.name.removesuffix(".yaml")
    if name not in shipped:
        close = difflib.get_close_matches(name, list(shipped), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise CLIError(f"no shipped config {args.name!r} (shipped: {', '.join(shipped)}{hint})")
    print(shipped[name].read_text(encoding="utf-8"), end="")
    return 0


# ----------------------------------------------------------------------------------------------
# parser


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        required=True,
        help="YAML config file, or the name of a shipped one (e.g. quickstart; `segloss configs` "
        "lists them)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        metavar="KEY=VALUE",
        action="extend",
        nargs="+",
        default=[],
        help="override a config key, e.g. --set train.epochs=5 data.root=/data/kvasir-seg",
    )


def _tile_arg(value: str) -> int | str:
    """One ``--tile`` value: a positive size or ``crop``."""
    if value == "crop" or (value.isdigit() and int(value) > 0):
        return value if value == "crop" else int(value)
    raise argparse.ArgumentTypeError(f"expected a positive size or 'crop', got {value!r}")


def _add_predict_args(p: argparse.ArgumentParser) -> None:
    """The options of ``segloss predict``."""
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="a checkpoint .pt file")
    p.add_argument(
        "--input", required=True, nargs="+", metavar="PATH", help="image/NIfTI files or folders"
    )
    p.add_argument("--output", required=True, metavar="DIR", help="folder for the label files")
    p.add_argument(
        "--format",
        default="auto",
        choices=["auto", "png", "tif"],
        help="2D label file type (default: auto, TIFF for TIFF inputs, else PNG; NIfTI in -> "
        "NIfTI out)",
    )
    p.add_argument("--probs", action="store_true", help="also write float32 probabilities")
    p.add_argument(
        "--tile",
        type=_tile_arg,
        nargs="+",
        metavar="N",
        help="tile size per axis, or 'crop' (the training crop or patch); default: as the run's "
        "validation and eval.json: 2D images whole (tiles of the crop above 2048 x 2048 "
        "pixels), 3D volumes in patches",
    )
    p.add_argument(
        "--overlap",
        type=float,
        default=0.25,
        help="fraction of a tile shared with its neighbour, in [0, 1) (default: 0.25)",
    )
    p.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass (default: 4)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default: auto)")
    p.add_argument("--no-amp", action="store_true", help="float32 on GPU")
    p.add_argument(
        "--no-resize",
        action="store_true",
        help="predict at native resolution instead of the checkpoint's training size",
    )
    p.add_argument(
        "--to-grey",
        action="store_true",
        help="convert colour images to grey (BT.601 luma) for a model trained on grey images "
        "(without it such input is refused)",
    )
    p.add_argument(
        "--fill-nonfinite",
        type=float,
        metavar="VALUE",
        help="replace NaN/Inf pixels with VALUE, reporting how many (without it such input is "
        "refused)",
    )


def _add_evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pred", required=True, metavar="DIR", help="folder of predicted label files")
    p.add_argument("--gt", required=True, metavar="DIR", help="folder of ground-truth label files")
    p.add_argument(
        "--spacing",
        type=float,
        nargs="+",
        help="spacing per axis in the files' axis order: X Y Z for NIfTI (default: the header's "
        "zooms), rows columns for 2D images (default: 1, pixel units)",
    )
    p.add_argument(
        "--tolerance", type=float, default=1.0, help="NSD tolerance (physical units; default: 1)"
    )
    p.add_argument(
        "--num-classes",
        type=int,
        help="labels 0 to N-1, background included (default: max label + 1)",
    )
    p.add_argument(
        "--include-background", action="store_true", help="also score class 0 (background)"
    )
    p.add_argument(
        "--class-names",
        nargs="+",
        help="names of classes 1, 2, ... (a leading 'background' names class 0, as in "
        "data.class_names)",
    )
    p.add_argument("--output", metavar="DIR", help="where the CSV/Markdown go (default: --pred)")


def _add_configs_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "configs",
        parents=[common],
        help="list the shipped example configs, or print one to copy and edit",
        description="Without NAME: list the example configs shipped with the package (usable "
        "as --config NAME). With NAME: print that config, e.g. `segloss configs kvasir_pm_dice "
        "> mine.yaml` to start your own.",
    )
    p.add_argument("name", nargs="?", metavar="NAME", help="a shipped config to print")
    p.set_defaults(func=cmd_configs)


def build_parser() -> argparse.ArgumentParser:
    """The ``segloss`` argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(
        prog="segloss",
        description="Train, predict, evaluate and compare segmentation losses (napari-segloss).",
        epilog="New here? `segloss train --config quickstart` trains a small U-Net on Kvasir-SEG "
        "pairs bundled with the package (no download; minutes on a CPU); `segloss configs` lists "
        "the shipped configs, `segloss losses` the losses; `segloss COMMAND --help` shows a "
        "command's options. "
        "On Linux the command keeps freed memory for reuse (glibc malloc): large CPU "
        "tensors, such as big 3D patches, stop page-faulting on every step. "
        "SEGLOSS_MALLOC_TUNING=0 turns it off.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch CPU threads (default: torch's choice; 1 is faster on busy shared CPUs)",
    )
    common.add_argument("--debug", action="store_true", help="show tracebacks on errors")

    p = sub.add_parser(
        "train", parents=[common], help="train a model from a YAML config",
        description="Train a model from a YAML config (a path or a shipped name); writes "
        "config.yaml, metrics.csv, checkpoint.pt, best.pt and eval.json to its output folder.",
    )  # fmt: skip
    _add_config_args(p)
    p.add_argument("--resume", action="store_true", help="continue the run in the output dir")
    p.add_argument(
        "--init-checkpoint", metavar="CKPT", help="fine-tune: start from this checkpoint's weights"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "predict", parents=[common], help="segment images with a checkpoint, as its run's validation did",
        description="Segment images or NIfTI volumes with a checkpoint alone, run as the "
        "training run's validation ran them (see --tile); writes one label file per input (and "
        "probabilities with --probs).",
    )  # fmt: skip
    _add_predict_args(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "evaluate", parents=[common], help="metrics of predicted label files against ground truth",
        description="Per-class Dice, IoU, precision, recall, NSD and HD95 of label files against "
        "ground-truth files of the same names, at the files' own size (a run's eval.json "
        "scores at data.size, so its HD95 pixels differ); writes per_image.csv, summary.csv and "
        "summary.md.",
    )  # fmt: skip
    _add_evaluate_args(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "compare",
        parents=[common],
        help="train losses x seeds and tabulate like the PM-Dice paper",
        description="Train one model per loss and seed, everything else fixed, and tabulate "
        "the scores like the PM-Dice paper's tables.",
        epilog="Scores each run on the validation split, or on a held-out folder with "
        "--set data.test_root=DIR (same images/ and masks/ sub-folders). Re-running into the "
        "same --output reuses finished runs and resumes stopped ones. Writes compare.json, "
        "runs.csv, results.csv, results.md, runs/<loss>/seed<k>/ and heldout/ (read them "
        "with napari_segloss.engine.read_compare). Example on the bundled data, scored on the "
        "3 unseen sample frames: segloss compare --config quickstart --losses dice pm_dice "
        "--seeds 0 1 --set data.test_root=bundled:kvasir --output compare/demo",
    )
    _add_config_args(p)
    p.add_argument(
        "--losses",
        required=True,
        nargs="+",
        metavar="LOSS",
        help="loss names (e.g. ce dice pm_dice ce+pm_dice; 'pm_dice:gamma=2' sets params)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1, 2],
        metavar="SEED",
        help="train.seed values: one run per loss and seed (default: 0 1 2)",
    )
    p.add_argument("--output", required=True, metavar="DIR", help="folder for the tables and runs")
    p.add_argument("--title", help="table title (default: the config's name)")
    p.add_argument(
        "--progress",
        action="store_true",
        help="per-step progress bars for each run (without it: a line on stderr when each run "
        "starts and ends)",
    )
    p.set_defaults(func=cmd_compare)

    _add_configs_parser(sub, common)
    add_losses_parser(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``segloss`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    tune_malloc()  # large CPU tensors reuse freed memory (see engine/allocator.py)
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads: expected a positive integer, got {args.threads}")
    try:
        if args.threads is not None:
            import torch  # a second or two: a Ctrl-C meanwhile is an interrupt like any other

            torch.set_num_threads(args.threads)
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe surfaces here, not at interpreter exit
        return code
    except KeyboardInterrupt:
        print(f"segloss {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no 2nd error at exit
        return 141
    except (ValueError, OSError, RuntimeError) as exc:  # RuntimeError: GPU out of memory only
        oom = out_of_memory_text(exc, OUT_OF_MEMORY_HINTS.get(args.command, "free the GPU"))
        if args.debug or not (oom or isinstance(exc, ValueError | OSError)):
            raise
        msg = oom or (str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        if isinstance(exc, FileNotFoundError) and exc.filename and str(exc.filename) not in msg:
            msg = f"{msg}: {exc.filename}"
        print(f"segloss {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
