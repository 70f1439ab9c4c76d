"""The `digitrec` command: parses arguments, calls the Python API, prints.  No logic of its own."""

from __future__ import annotations

import argparse
import json
import os
import sys

from digitrec import __version__
from digitrec.errors import DigitrecError, exit_status


def _parser() -> argparse.ArgumentParser:
    examples = ("examples:\n  digitrec fetch\n  digitrec train\n  digitrec evaluate runs/seed-20261128-101500\n"
                "  digitrec predict my_digit.png\n\nrun `digitrec COMMAND --help` for each command")
    p = argparse.ArgumentParser(prog="digitrec", description="Handwritten digit recognition with CNNs in PyTorch.",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=examples)
    p.add_argument("--version", action="version", version=f"digitrec {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help: str, examples: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help, epilog="examples:\n" + examples,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        c.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors")
        return c

    c = command("fetch", "download and verify a data set (SHA-256) into DATA_DIR/<Name>/raw",
                "  digitrec fetch\n  digitrec fetch --dataset fashion-mnist --data-dir ~/data\n"
                "  digitrec fetch --force   # fetch again even if files are there")
    c.add_argument("--dataset", default="mnist", help="mnist (default) or fashion-mnist")
    c.add_argument("--data-dir", default="data", help="root folder of the data sets (default: data)")
    c.add_argument("--force", action="store_true", help="ignore files already there and fetch again")

    c = command("train", "train a model with a recipe, evaluating on the test split after each epoch",
                "  digitrec train                       # the seed recipe, exactly as the course report\n"
                "  digitrec train --recipe fast --out runs/fast\n"
                "  digitrec train --epochs 3 --batch-size 128 --lr 2e-3 --seed 1\n"
                "  digitrec train --set schedule=constant --set augment.degrees=10   # any recipe field\n"
                "  digitrec train --resume runs/seed-20261128-101500\n"
                "  torchrun --nproc_per_node=2 -m digitrec train --recipe fast   # several processes")
    c.add_argument("--recipe", help="seed (default), fast or best; see `digitrec recipes`")
    c.add_argument("--out", help="run folder (default: runs/<recipe>-<date>-<time>)")
    _training_options(c)

    c = command("distill", "train the recipe's model (shippable size) on a teacher's soft targets, e.g. an "
                "ensemble's: knowledge distillation (Hinton et al. 2015), with the recipe's augmentation",
                "  digitrec distill runs/best-ensemble --recipe best --out runs/best-distilled\n"
                "  digitrec distill runs/best-ensemble --out runs/d --set distill_temperature=2 "
                "--set distill_weight=0.5\n"
                "  digitrec distill runs/best-ensemble --resume runs/best-distilled   # the same teacher again")
    c.add_argument("teacher", metavar="TEACHER", help="model file or run folder to learn from (e.g. an ensemble)")
    c.add_argument("--recipe", help="best (default), fast or seed: the student's model and training; the "
                   "recipe's distill_temperature and distill_weight set the soft targets")
    c.add_argument("--out", help="run folder (required unless --resume)")
    _training_options(c)

    c = command("ablate", "test the course report's claims: train the seed recipe without conv3, BatchNorm, "
                "Dropout or the LR schedule, several seeds each, and compare on a validation split",
                "  digitrec ablate                                  # 5 variants x 5 seeds x 10 epochs\n"
                "  digitrec ablate --epochs 2 --seeds 2 --variants seed,no-conv3 --out runs/ablation-short\n"
                "  digitrec ablate --out runs/ablation              # again: finished runs are not rerun")
    c.add_argument("--out", default="runs/ablation", help="folder for the runs and the results (default: runs/ablation)")
    c.add_argument("--seeds", type=int, default=5, help="runs per variant, seeds 0..N-1 (default 5)")
    c.add_argument("--variants", help="comma-separated: seed,no-conv3,no-batchnorm,no-dropout,constant-lr (default: all)")
    _recipe_options(c)
    c.add_argument("--device", default="auto", help="auto (default), cpu, cuda or mps")
    c.add_argument("--data-dir", default="data", help="root folder of the data sets (default: data)")
    c.add_argument("--progress", choices=["auto", "bar", "lines"], default="auto", help="as for train")
    c.add_argument("--tensorboard", action="store_true", help="TensorBoard event files in every run folder")

    c = command("explain", "show what the network sees: input, filters, feature maps, attribution (one PNG per image)",
                "  digitrec explain my_digit.png                    # the shipped model -> explanations/\n"
                "  digitrec explain --index 0 --index 8 --model runs/seed-20261128-101500 --out docs/\n"
                "  (needs pip install 'digitrec[learn]')")
    c.add_argument("paths", nargs="*", metavar="IMAGE", help="image files, folders, globs, or - for stdin")
    c.add_argument("--index", type=int, action="append", default=[], metavar="N",
                   help="an MNIST test image by its index (repeatable)")
    c.add_argument("--model", help="model file or run folder (default: the shipped model)")
    c.add_argument("--out", default="explanations", help="folder for the PNGs (default: explanations)")
    c.add_argument("--data-dir", default="data", help="where MNIST is, for --index (default: data)")

    c = command("summary", "print a model's layers, output shapes, parameters and multiply-adds per image",
                "  digitrec summary                 # the shipped model\n  digitrec summary seed\n"
                "  digitrec summary runs/seed-20261128-101500\n  (needs pip install 'digitrec[learn]')")
    c.add_argument("model", nargs="?", help="an architecture (seed, fast, wide, ...), a model file or a run folder")

    c = command("evaluate", "evaluate a model on the test split: table, report.json, confusion.png, mistakes.png",
                "  digitrec evaluate runs/seed-20261128-101500\n  digitrec evaluate model.safetensors --out reports/")
    c.add_argument("model", help="a model file (.safetensors) or a run folder")
    c.add_argument("--data-dir", default="data", help="root folder of the data sets (default: data)")
    c.add_argument("--dataset", help="data set to evaluate on (default: the one the model was trained on)")
    c.add_argument("--out", help="folder for the report files (default: beside the model)")
    c.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    c.add_argument("--json", action="store_true", help="print report.json instead of the table")

    command("recipes", "print every recipe's full settings", "  digitrec recipes")

    c = command("predict", "predict the digit in each image (photos, scans, canvas drawings, MNIST-style)",
                "  digitrec predict digit.png\n  digitrec predict photos/ 'scans/*.jpg' --format json\n"
                "  cat drawing.png | digitrec predict -\n"
                "  digitrec predict digit.jpg --topk 3 --save-preprocessed seen/   # the 28x28 the model saw\n"
                "  digitrec predict digit.png --model model.onnx --backend onnxruntime")
    c.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders (recursive), globs, or - for stdin")
    _model_options(c)
    c.add_argument("--topk", type=int, default=3, help="how many best guesses to list (default 3)")
    c.add_argument("--format", choices=["table", "json", "csv"], default="table")
    c.add_argument("--save-preprocessed", metavar="DIR", help="write each 28x28 the model saw as PNG into DIR")
    c.add_argument("--workers", type=int, default=0,
                   help="processes that prepare images (default 0: one per core from 512 images; 1: none)")
    _answer_options(c)

    c = command("read", "read the handwritten numbers in each image: lines top to bottom, numbers left to right, "
                "separators (- / . : ,) kept",
                "  digitrec read phone-number.jpg\n  digitrec read sheet.png --annotate sheet-read.png\n"
                "  digitrec read lines/ --format json")
    c.add_argument("paths", nargs="+", metavar="IMAGE", help="image files, folders (recursive), globs, or -")
    _model_options(c)
    c.add_argument("--format", choices=["table", "json", "csv"], default="table")
    c.add_argument("--annotate", metavar="OUT.png",
                   help="draw the lines, numbers and digits found (OUT-<n>.png for several)")
    c.add_argument("--digits-only", action="store_true", help="leave the separators out of the text")
    c.add_argument("--cut-only", action="store_true",
                   help="cut touching digits apart instead of reading them with the sequence reader")
    _answer_options(c)

    c = command("serve", "serve predictions over HTTP, with a drawing page at /",
                "  digitrec serve                       # http://127.0.0.1:8000/ (API docs at /docs)\n"
                "  digitrec serve --port 9000 --model runs/best-20261128-101500\n"
                "  digitrec serve --model best.onnx --backend onnxruntime --workers 2\n"
                "  curl -H 'Content-Type: image/png' --data-binary @digit.png http://127.0.0.1:8000/v1/predict")
    env = " (env DIGITREC_%s)"
    c.add_argument("--host", help="address to listen on (default 127.0.0.1)" + env % "HOST")
    c.add_argument("--port", type=int, help="port (default 8000)" + env % "PORT")
    _model_options(c, precision=False)
    c.add_argument("--workers", type=int, help="server processes (default 1)" + env % "WORKERS")
    c.add_argument("--max-bytes", type=int, help="largest request body (default 5 MB)" + env % "MAX_BYTES")
    c.add_argument("--max-concurrency", type=int,
                   help="prediction requests in flight per process; beyond it 503 + Retry-After (default 64)"
                        + env % "MAX_CONCURRENCY")
    c.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="allow browser calls from this origin (repeatable; default none)" + env % "CORS_ORIGIN")
    c.add_argument("--log-format", choices=["text", "json"], help="request log lines (default text)"
                   + env % "LOG_FORMAT")
    c.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="default info"
                   + env % "LOG_LEVEL")
    c.add_argument("--decode-workers", type=int, help="sandboxed decoding processes (default 2)"
                   + env % "DECODE_WORKERS")
    c.add_argument("--decode-memory-mb", type=int, help="memory budget of one decoding process (default 224)"
                   + env % "DECODE_MEMORY_MB")
    c.add_argument("--decode-timeout", type=float, help="seconds one image may take to decode (default 1.5)"
                   + env % "DECODE_TIMEOUT")
    c.add_argument("--model-threads", type=int, help="threads inside one model call (default 1)"
                   + env % "MODEL_THREADS")

    c = command("ensemble", "combine trained models into one that averages their probabilities",
                "  digitrec ensemble runs/best-a runs/best-b runs/best-c --out runs/best-ensemble\n"
                "  digitrec evaluate runs/best-ensemble")
    c.add_argument("models", nargs="+", metavar="MODEL", help="model files or run folders (two or more)")
    c.add_argument("--out", required=True, help="folder for the ensemble's model.safetensors")
    c.add_argument("--data-dir", default="data", help="where the validation split for calibration is (default: data)")
    c.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")

    c = command("train-reader", "train the sequence reader that `read` uses for numbers whose digits touch",
                "  digitrec train-reader --out src/digitrec/weights/reader.safetensors   # the shipped one")
    c.add_argument("--out", required=True, help="the reader's .safetensors file")
    c.add_argument("--data-dir", default="data", help="where MNIST is (default: data)")
    c.add_argument("--steps", type=int, default=10_000, help="batches of 64 fresh numbers (default 10000)")
    c.add_argument("--seed", type=int, default=0)

    c = command("calibrate", "fit a trained model's calibration again (temperature, not-a-digit and uncertain "
                "thresholds) on the held-out data its training used; the weights stay as they are",
                "  digitrec calibrate runs/best-20261128-101500 --out runs/best-recalibrated\n"
                "  digitrec evaluate runs/best-recalibrated")
    c.add_argument("model", metavar="MODEL", help="model file or run folder")
    c.add_argument("--out", required=True, help="folder for the recalibrated model.safetensors")
    c.add_argument("--data-dir", default="data", help="where the validation split for calibration is (default: data)")
    c.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")

    c = command("export", "export a model for deployment: ONNX (onnxruntime) or torch.export (.pt2), verified",
                "  digitrec export runs/best-20261128-101500 --format onnx --out best.onnx\n"
                "  digitrec export model.safetensors --format pt2")
    c.add_argument("model", help="a model file (.safetensors) or a run folder")
    c.add_argument("--format", choices=["onnx", "pt2"], default="onnx")
    c.add_argument("--out", help="output file (default: beside the model, .onnx or .pt2)")
    c.add_argument("--data-dir", default="data", help="where the test set for verification is (default: data)")
    c.add_argument("--no-verify", action="store_true", help="skip the comparison on the test set")
    c.add_argument("--quantize", choices=["int8"],
                   help="onnx only: static int8 quantization calibrated on training images; refused if it loses "
                        "over 0.1 accuracy points on the test set (default out: MODEL.int8.onnx)")
    return p


def _training_options(c: argparse.ArgumentParser) -> None:
    """What `train` and `distill` share."""
    c.add_argument("--dataset", help="mnist (default) or fashion-mnist")
    _recipe_options(c)
    c.add_argument("--seed", type=int, help="random seed (default 0)")
    c.add_argument("--device", default="auto", help="auto (default: cuda, then mps, then cpu), cpu, cuda or mps")
    c.add_argument("--data-dir", default="data", help="root folder of the data sets (default: data)")
    c.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run where its last checkpoint ends")
    c.add_argument("--init", metavar="MODEL", help="start from this model's weights (fine-tuning; same architecture)")
    c.add_argument("--compile", action="store_true", help="torch.compile the model (mostly useful on CUDA)")
    c.add_argument("--precision", choices=["auto", "fp32", "bf16"],
                   help="override the recipe's: auto = bf16 autocast where the hardware has bf16 (not for seed)")
    c.add_argument("--progress", choices=["auto", "bar", "lines"], default="auto",
                   help="a progress bar per epoch (bar), per-epoch lines only (lines), or bar on a terminal (auto)")
    c.add_argument("--tensorboard", action="store_true",
                   help="write TensorBoard event files into the run folder (pip install 'digitrec[learn]')")


def _recipe_options(c: argparse.ArgumentParser) -> None:
    c.add_argument("--epochs", type=int, help="override the recipe's number of epochs")
    c.add_argument("--batch-size", type=int, help="override the recipe's batch size (global: all processes together)")
    c.add_argument("--lr", type=float, help="override the recipe's (peak) learning rate")
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="set any recipe field, e.g. --set schedule=constant --set augment.degrees=5 (repeatable)")


def _recipe(a, recipe):
    """The recipe (or recipe name) with the command line's overrides, validated by the recipe itself."""
    from digitrec.training.recipes import get_recipe

    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    return recipe.with_overrides(epochs=a.epochs, batch_size=a.batch_size, lr=a.lr).with_settings(a.set)


def _model_options(c: argparse.ArgumentParser, precision: bool = True) -> None:
    c.add_argument("--model", help="model file (.safetensors or .onnx) or run folder (default: the shipped model)")
    c.add_argument("--backend", choices=["torch", "onnxruntime"], help="default: from the model file's type")
    if precision:  # (the server answers one image at a time: fp32, on onnxruntime when installed)
        c.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                       help="auto (default): bf16 where the CPU has it in hardware and the model was trained in "
                            "bf16")


def _answer_options(c: argparse.ArgumentParser) -> None:
    from digitrec.inference.calibration import CONFORMAL_COVERAGE, DEFAULT_COVERAGE

    c.add_argument("--max-error", type=float, metavar="E",
                   help="flag as uncertain the answers under the confidence that keeps at most this share of the "
                        "validation digits' answers wrong (e.g. 0.001: one in a thousand)")
    c.add_argument("--sets", action="store_true",
                   help="add each digit's prediction set: the digits that hold the true one with --coverage")
    low, high = CONFORMAL_COVERAGE
    c.add_argument("--coverage", type=float, metavar="C",
                   help=f"the prediction sets' coverage, {low}-{high} (default {DEFAULT_COVERAGE}; implies --sets)")


def _answering(a) -> dict:
    """--max-error, --sets and --coverage as Predictor.answering's arguments."""
    return {"max_error": a.max_error, "coverage": a.coverage, "sets": a.sets}


def _cmd_fetch(a) -> int:
    from digitrec.data.datasets import fetch

    fetch(a.dataset, a.data_dir, force=a.force)
    return 0


def _cmd_train(a, teacher: str | None = None) -> int:
    from digitrec.training.train import default_run_dir, train

    progress = {"auto": None, "bar": True, "lines": False}[a.progress]
    if a.resume:
        # A resumed run keeps the recipe, seed, data set and folder it was started with: refuse what it would
        # ignore rather than drop it silently.
        ignored = [opt for opt, value in (("--recipe", a.recipe), ("--dataset", a.dataset), ("--epochs", a.epochs),
                                          ("--batch-size", a.batch_size), ("--lr", a.lr), ("--seed", a.seed),
                                          ("--out", a.out), ("--precision", a.precision), ("--init", a.init))
                   if value is not None] + ["--set"] * bool(a.set)
        if ignored:
            raise DigitrecError(f"--resume continues the run as it was started; {ignored[0]} cannot change it "
                                "(start a new run with --out instead)")
        recipe, dataset, out = None, "mnist", a.resume  # train() reads them from the run folder
    else:
        recipe, dataset = _recipe(a, a.recipe or ("best" if teacher else "seed")), a.dataset or "mnist"
        if teacher and not a.out:
            raise DigitrecError("distill needs --out RUN_DIR (or --resume RUN_DIR)")
        out = a.out or default_run_dir(recipe, dataset)
    board = None
    if a.tensorboard:
        from digitrec.training.tensorboard_log import TensorBoardLog

        board = TensorBoardLog(out)  # says which extra to install before anything trains
    if os.environ.get("RANK", "0") == "0" and not a.resume:  # under torchrun, the first process speaks for all
        print(f"run folder: {out}")
    try:
        train(recipe, dataset=dataset, data_dir=a.data_dir, out=out, seed=a.seed or 0, device=a.device,
              resume=bool(a.resume), compile=a.compile, progress=progress, precision=a.precision,
              on_epoch=board and board.on_epoch, teacher=teacher, init=a.init)
    finally:
        if board:
            board.close()
    return 0


def _cmd_distill(a) -> int:
    return _cmd_train(a, teacher=a.teacher)


def _cmd_ablate(a) -> int:
    from digitrec.training.ablate import BASE, ablate, format_table

    variants = [v.strip() for v in a.variants.split(",") if v.strip()] if a.variants is not None else None
    report = ablate(a.out, variants=variants, seeds=a.seeds, base=_recipe(a, BASE), data_dir=a.data_dir,
                    device=a.device, tensorboard=a.tensorboard,
                    progress={"auto": None, "bar": True, "lines": False}[a.progress])
    print(format_table(report))
    print("\nwrote " + ", ".join(report["files"]))
    return 0


def _cmd_explain(a) -> int:
    from digitrec.analysis.explain import explain

    records = explain(a.paths, model=a.model, out=a.out, indices=a.index, data_dir=a.data_dir)
    for r in records:
        if r["error"]:
            print(f"{r['path']}: error: {r['error']}")
        else:
            top = "  ".join(f"{d}:{p:.3f}" for d, p in r["topk"])
            print(f"{r['path']}: {r['digit']}  top: {top}  -> {r['out']}")
    return 1 if any(r["error"] for r in records) else 0


def _cmd_summary(a) -> int:
    from digitrec.analysis.explain import summary

    print(summary(a.model))
    return 0


def _cmd_evaluate(a) -> int:
    from digitrec.analysis.evaluate import evaluate, format_report

    report = evaluate(a.model, data_dir=a.data_dir, dataset=a.dataset, out=a.out, device=a.device)
    if a.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
        print("\nwrote " + ", ".join(report["files"]))
        print(f"Test Accuracy: {report['accuracy']:.2f}%")
    return 0


def _cmd_recipes(a) -> int:
    from digitrec.training.recipes import RECIPES

    print(json.dumps({name: r.to_dict() for name, r in RECIPES.items()}, indent=2))
    return 0


def _cmd_train_reader(a) -> int:
    from digitrec.training.sequence import train_sequence_reader

    if a.steps < 1:
        raise DigitrecError("--steps must be at least 1")
    meta = train_sequence_reader(a.data_dir, a.out, a.steps, a.seed)
    print(f"wrote {a.out}: validation numbers read exactly {meta['validation_exact']:.1%}")
    return 0


def _cmd_predict(a) -> int:
    from digitrec.inference.predict import Predictor, predict_paths
    from digitrec.inference.records import format_records

    if not 1 <= a.topk <= 10:
        raise DigitrecError("--topk must be between 1 and 10")
    if a.workers < 0:
        raise DigitrecError("--workers must be 0 (one per core for large folders) or more")
    # Loaded once the preparing workers have started (PyTorch's import overlaps their work).
    load = lambda: Predictor(a.model, a.backend, precision=a.precision).answering(**_answering(a))  # noqa: E731
    records = predict_paths(a.paths, load, a.topk, a.save_preprocessed, a.workers)
    print(format_records(records, a.format, "predict"))
    return 1 if any(r.error for r in records) else 0


def _cmd_read(a) -> int:
    from digitrec.inference.predict import Predictor, load_reader, read_paths
    from digitrec.inference.records import format_records

    reader = None if a.cut_only else load_reader()
    predictor = Predictor(a.model, a.backend, precision=a.precision).answering(**_answering(a))
    records = read_paths(a.paths, predictor, a.annotate, a.digits_only, reader)
    print(format_records(records, a.format, "read"))
    return 1 if any(r.error for r in records) else 0


def _cmd_serve(a) -> int:
    from digitrec.serve import serve, settings

    flags = {k: getattr(a, k, None) for k in ("host", "port", "model", "backend", "workers", "max_bytes",
                                              "max_concurrency", "cors_origin", "log_format", "log_level",
                                              "decode_workers", "decode_memory_mb", "decode_timeout",
                                              "model_threads")}
    serve(settings(flags))
    return 0


def _cmd_ensemble(a) -> int:
    from digitrec.training.ensemble import build_ensemble

    print(f"wrote {build_ensemble(a.models, a.out, a.data_dir, a.device)}")
    return 0


def _cmd_calibrate(a) -> int:
    from digitrec.training.calibrate import recalibrate

    print(f"wrote {recalibrate(a.model, a.out, a.data_dir, a.device)}")
    return 0


def _cmd_export(a) -> int:
    from digitrec.inference.export import export

    if a.quantize:
        return _export_int8(a)
    result = export(a.model, a.format, a.out, None if a.no_verify else a.data_dir)
    print(f"wrote {result['path']}")
    return 0


def _export_int8(a) -> int:
    import tempfile
    from pathlib import Path

    from digitrec.inference.export import export, quantize_int8
    from digitrec.modelfile import resolve_model_path

    if a.format != "onnx":
        raise DigitrecError("--quantize int8 needs --format onnx")
    source = resolve_model_path(a.model)
    out = Path(a.out) if a.out else source.with_suffix(".int8.onnx")
    with tempfile.TemporaryDirectory() as tmp:
        float_onnx = export(source, "onnx", Path(tmp) / "float.onnx", None if a.no_verify else a.data_dir)["path"]
        result = quantize_int8(float_onnx, out, a.data_dir, verify_on_test=not a.no_verify, source=source)
    print(f"wrote {result['path']}")
    return 0


COMMANDS = {"fetch": _cmd_fetch, "train": _cmd_train, "train-reader": _cmd_train_reader, "distill": _cmd_distill,
            "ablate": _cmd_ablate,
            "explain": _cmd_explain, "summary": _cmd_summary, "evaluate": _cmd_evaluate, "recipes": _cmd_recipes,
            "predict": _cmd_predict, "read": _cmd_read, "export": _cmd_export, "ensemble": _cmd_ensemble,
            "calibrate": _cmd_calibrate, "serve": _cmd_serve}


# Commands whose whole result is what they print: the `digitrec` executable ends them without the interpreter's
# teardown, which with PyTorch loaded takes 0.4 s (measured on the Xeon: `import torch` alone, 1.95 s to the
# shell against 1.47 s with os._exit), a tenth of `predict` on 10,000 PNGs.  They hold no temporary files
# or pools by then.  Not under a profiler or a coverage tracer, which write their results at exit.
QUICK_EXIT = {"predict", "read"}


def run() -> None:
    """The `digitrec` executable (and `python -m digitrec`): main() as a process."""
    args = _parser().parse_args()
    try:
        code = main(args=args)
        if args.command in QUICK_EXIT and sys.gettrace() is None and sys.getprofile() is None:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    except BrokenPipeError:  # the reader went away (`digitrec predict DIR | head`): quietly, as Unix tools do,
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (nothing left to flush at exit)
        code = 141  # with the shell's code for a broken pipe
    sys.exit(code)


# An error's `param` (the argument or recipe field the library names) -> the flag that changes it.
FLAGS = {"out": "--out, or --resume OUT to continue the run there", "batch_size": "--batch-size",
         "train_fraction": "--set train_fraction=...",
         "outliers": "--set outliers=0 --set printed=0 --set augment.euro=0", "max_error": "--max-error",
         "coverage": "--coverage"}


def error_line(e: DigitrecError) -> str:
    """The one line the CLI prints for an error: the library's message, and which flag to change."""
    flag = FLAGS.get(e.param or "")
    return f"digitrec: error: {e}" + (f" (change: {flag})" if flag else "")


def main(argv: list[str] | None = None, args: argparse.Namespace | None = None) -> int:
    args = args or _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except DigitrecError as e:
        if args.debug:
            raise
        print(error_line(e), file=sys.stderr)
        return exit_status(e.code)
    except KeyboardInterrupt:
        print("digitrec: interrupted", file=sys.stderr)
        return 130
