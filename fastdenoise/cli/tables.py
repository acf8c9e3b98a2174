"""`fastdenoise tables ...`: the paper's Tables 1-3 and the labels split."""

from pathlib import Path
from typing import Annotated

import typer

from fastdenoise.choices import PEERS, NoiseAt, Split
from fastdenoise.cli.common import DeviceOpt, fail, parse_sigmas, skipped_peer, starting
from fastdenoise.words import plural

tables_app = typer.Typer(
    help="The paper's Tables 1-3, regenerated: Markdown + JSON + PNG per table.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

SigmaOpt = Annotated[str, typer.Option(help="Comma-separated noise levels, 0-255 units.")]
SeedOpt = Annotated[
    str,
    typer.Option(
        "--seeds",
        "--seed",
        help=(
            "Noise seeds, comma-separated (0,1): image i gets numpy default_rng([seed, i]) under each; cells pool the "
            "seeds."
        ),
    ),
]
ControlOpt = Annotated[
    str | None,
    typer.Option(
        help=("Arm every other arm is tested against (paired tests in the table); default: separate, if given.")
    ),
]
DrawsOpt = Annotated[int, typer.Option(help="Bootstrap resamples for the 95% intervals and paired tests.", min=100)]
LimitOpt = Annotated[int | None, typer.Option(help="Only the first N images (quick runs).", min=1)]
ModelOpt = Annotated[
    list[str] | None,
    typer.Option("--model", "-m", help=("Extra arm NAME=WEIGHTS (or WEIGHTS: named by its stem); repeatable.")),
]


def arm_weights(arm: str, trained: str):
    """The option naming one arm's denoiser weights (table2/table3: separate, joint, cross-task)."""
    return Annotated[
        Path | None, typer.Option(help=f"Arm '{arm}': denoiser weights trained {trained}.", exists=True, dir_okay=False)
    ]


SeparateOpt = arm_weights("separate", "with MSE alone")
WithClassifier = "with the classifier (--task classify)"
WithSegmenter = "with the segmenter (--task segment)"
CacheOpt = Annotated[
    Path | None,
    typer.Option(
        help=(
            "CBM3D results cache (keyed by noisy image, sigma, bm3d version); default ~/.cache/fastdenoise/cbm3d or "
            "$FASTDENOISE_CACHE/cbm3d."
        ),
        file_okay=False,
    ),
]
OutputCacheOpt = Annotated[
    Path | None,
    typer.Option(
        help=(
            "Keep every model arm's 8-bit outputs here (by weights, noisy input, sigma): a second table over the same "
            "crops (another --head, the same resizing and cropping) runs no denoiser."
        ),
        file_okay=False,
    ),
]
QuantizeOpt = Annotated[
    bool,
    typer.Option(
        help=(
            "Every arm starts from the noisy image clipped and rounded to 8 bits (as the data README's reference "
            "numbers); --no-quantize: denoisers get the unclipped float noisy image."
        )
    ),
]
CleanOpt = Annotated[bool, typer.Option(help="Add the head on the clean image as a reference row.")]


def run_table(label: str, build, out: Path) -> None:  # build: ProgressFn -> TableResult
    """Build a table under a progress bar, write its files, print it; expected failures become one-line errors."""
    import shlex
    import sys

    with starting():
        import torch
        from rich.console import Console
        from rich.markdown import Markdown

        from fastdenoise.evaluation.tables import markdown, progress_bar, write_table

    console = Console()
    try:
        with progress_bar(label) as progress:
            table = build(progress)
    except (ValueError, FileNotFoundError, ImportError) as err:
        raise fail(str(err)) from err
    meta = {"command": shlex.join(["fastdenoise", *sys.argv[1:]]), "torch": torch.__version__}
    paths = write_table(table, out, meta)
    console.print(Markdown(markdown(table)))
    console.print(f"wrote {', '.join(str(p) for p in paths)}")


def named_models(model: list[str] | None) -> list[tuple[str, Path]]:
    with starting():
        from fastdenoise.evaluation.tables import parse_named

    try:
        pairs = [parse_named(m) for m in model or []]
    except ValueError as err:
        raise fail(f"--model: {err}") from err
    missing = [str(p) for _, p in pairs if not p.is_file()]
    if missing:
        raise fail(f"--model: no such weights file {missing[0]}")
    return pairs


def seed_list(text: str) -> tuple[int, ...]:
    """'0,1' -> (0, 1); a one-line error otherwise."""
    try:
        seeds = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise fail(f"--seeds: expected comma-separated integers like 0,1, got {text!r}") from None
    if not seeds:
        raise fail("--seeds: give at least one noise seed")
    return seeds


def sigma_list(text: str) -> tuple[float, ...]:
    sigmas = tuple(parse_sigmas(text))
    if not sigmas:
        raise fail("--sigma: give at least one noise level")
    return sigmas


@tables_app.command("table1")
def table1_cmd(
    data: Annotated[
        Path, typer.Argument(metavar="DATA", help="Folder of clean images (Kodak24).", exists=True, file_okay=False)
    ],
    model: ModelOpt = None,
    peers: Annotated[
        str,
        typer.Option(
            help=(
                f"Comma-separated peers run in the same command ('' for none): {', '.join(PEERS)}; cdncnn = the "
                f"network "
                "trained for each sigma."
            )
        ),
    ] = "cbm3d,cdncnn,cdncnn-b,ffdnet",
    peer_data: Annotated[
        Path | None,
        typer.Option(
            help=("Shared data folder holding weights/dncnn and weights/ffdnet; default $FASTDENOISE_DATA or DATA/.."),
            exists=True,
            file_okay=False,
        ),
    ] = None,
    cbm3d_limit: Annotated[
        int | None,
        typer.Option(
            help=("CBM3D on the first N images only (~25 s a Kodak image per sigma on 2 cores; cached)."), min=1
        ),
    ] = None,
    cbm3d_cache: CacheOpt = None,
    sigma: SigmaOpt = "25,35,50",
    seed: SeedOpt = "0",
    control: ControlOpt = None,
    draws: DrawsOpt = 2000,
    limit: LimitOpt = None,
    ssim: Annotated[bool, typer.Option(help="Also SSIM (slower).")] = False,
    device: DeviceOpt = "auto",
    out: Annotated[Path, typer.Option("--out", "-o", help=("Folder for table1.md, table1.json, table1.png."))] = Path(
        "results/table1"
    ),
) -> None:
    """Table 1: mean PSNR at each sigma for our denoisers (--model, default the bundled one) beside the peers."""
    names = [p.strip() for p in peers.split(",") if p.strip()]
    unknown = [p for p in names if p not in PEERS]
    if unknown:
        raise fail(f"--peers: {unknown[0]!r} is not one of {', '.join(PEERS)}")
    names = [p for p in names if not skipped_peer(p)]
    with starting():
        from fastdenoise.datasets import require_data_root
        from fastdenoise.evaluation.tables import Table1Config, model_arm, peer_arm, table1

    models = named_models(model) or [("fastdenoise (bundled)", None)]

    def build(progress):
        cfg = Table1Config(str(data), sigma_list(sigma), seed_list(seed), control, draws, limit, ssim)
        arms = [model_arm(name, weights, device) for name, weights in models]
        root = peer_data or (require_data_root(data) if names else None)
        arms += [peer_arm(p, root, device, cbm3d_limit, cbm3d_cache) for p in names]
        return table1(cfg, arms, progress)

    run_table("table 1", build, out)


@tables_app.command("table2")
def table2_cmd(
    data: Annotated[
        Path,
        typer.Argument(
            metavar="DATA",
            help=("Folder of labelled photos (imagenet-samples) with labels.csv 'file,index'."),
            exists=True,
            file_okay=False,
        ),
    ],
    separate: SeparateOpt = None,
    joint: arm_weights("joint", WithClassifier) = None,
    cross_task: arm_weights("cross-task", WithSegmenter) = None,
    model: ModelOpt = None,
    cbm3d: Annotated[
        int,
        typer.Option(
            help=(
                "CBM3D arm on the first N images of the split (~3 s a 224x224 crop per sigma; cached); 0 leaves it out."
            ),
            min=0,
        ),
    ] = 100,
    cbm3d_cache: CacheOpt = None,
    output_cache: OutputCacheOpt = None,
    labels: Annotated[
        Path | None,
        typer.Option(
            help=("CSV 'file,index' (files relative to DATA); default DATA/labels.csv."), exists=True, dir_okay=False
        ),
    ] = None,
    split: Annotated[
        Split,
        typer.Option(
            help=(
                "Rows of labels.csv used (0-based): train = even rows, test = odd rows, all. Evaluate a denoiser "
                "trained on the train half with --split test."
            )
        ),
    ] = Split.all,
    head: Annotated[
        str,
        typer.Option(
            help=(
                "Classifier: efficientnet-lite0|1|2, vgg16 (with --head-weights), torchvision:<model>. A head other "
                "than the one the joint arm was trained with measures cross-architecture transfer."
            )
        ),
    ] = "efficientnet-lite0",
    head_weights: Annotated[
        Path | None,
        typer.Option(
            help=("Weights of the head (default: its pip package; vgg16 needs torchvision's vgg16-397923af.pth)."),
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    resize: Annotated[
        int | None,
        typer.Option(
            help=(
                "Short side before the centre crop (default: the head's; Lite0 256, Lite1 272, Lite2 292, others 256)."
            ),
            min=8,
        ),
    ] = None,
    crop: Annotated[
        int | None,
        typer.Option(
            help=("Centre crop side (default: the head's; Lite0 224, Lite1 240, Lite2 260, others 224)."), min=8
        ),
    ] = None,
    sigma: SigmaOpt = "15,30,45,60",
    seed: SeedOpt = "0",
    control: ControlOpt = None,
    draws: DrawsOpt = 2000,
    limit: LimitOpt = None,
    quantize: QuantizeOpt = True,
    clean: CleanOpt = True,
    noise_at: Annotated[
        NoiseAt,
        typer.Option(
            help=(
                "crop: noise on the head's centre crop (the paper's protocol); photo: on the whole photo at its own "
                "size, denoised whole, then resized and cropped for the head as `run --task classify` does (the user's "
                "path)."
            )
        ),
    ] = NoiseAt.crop,
    device: DeviceOpt = "auto",
    out: Annotated[Path, typer.Option("--out", "-o", help=("Folder for table2.md, table2.json, table2.png."))] = Path(
        "results/table2"
    ),
) -> None:
    """Table 2: top-1 / top-5 of a frozen classifier at each sigma for the arms noisy, CBM3D, separate, joint,
    cross-task (each only if its weights are given), extra --model arms, and clean."""
    with starting():
        from fastdenoise.evaluation.tables import Table2Config, table2, task_arms
    cbm3d = 0 if cbm3d and skipped_peer("cbm3d") else cbm3d

    extra = named_models(model)

    def build(progress):
        cfg = Table2Config(
            str(data),
            str(labels) if labels else None,
            sigma_list(sigma),
            seed_list(seed),
            control,
            draws,
            split=split.value,
            limit=limit,
            head=head,
            head_weights=str(head_weights) if head_weights else None,
            resize=resize,
            crop=crop,
            quantize=quantize,
            device=device,
            noise_at=noise_at.value,
        )
        arms = task_arms(separate, joint, cross_task, cbm3d, extra, device, cbm3d_cache, output_cache)
        return table2(cfg, arms, clean=clean, progress=progress)

    run_table("table 2", build, out)


@tables_app.command("table3")
def table3_cmd(
    data: Annotated[
        Path,
        typer.Argument(
            metavar="DATA",
            help=("CamVid folder (SegNet layout: val/ and valannot/ inside)."),
            exists=True,
            file_okay=False,
        ),
    ],
    separate: SeparateOpt = None,
    joint: arm_weights("joint", WithSegmenter) = None,
    cross_task: arm_weights("cross-task", WithClassifier) = None,
    model: ModelOpt = None,
    cbm3d: Annotated[
        int,
        typer.Option(
            help=("CBM3D arm on the first N images (~11 s a 480x360 image per sigma; cached); 0 leaves it out."), min=0
        ),
    ] = 25,
    cbm3d_cache: CacheOpt = None,
    output_cache: OutputCacheOpt = None,
    subset: Annotated[str, typer.Option(help="Images in DATA/<subset>, masks in DATA/<subset>annot.")] = "val",
    head: Annotated[
        str,
        typer.Option(
            help=(
                "Segmenter: espnetv2-camvid (Cityscapes weights, classes merged into CamVid's 11), or another head "
                "with CamVid classes."
            )
        ),
    ] = "espnetv2-camvid",
    head_weights: Annotated[
        Path | None,
        typer.Option(
            help=("Weights of the head (default: weights/espnetv2 under $FASTDENOISE_DATA or a folder above DATA)."),
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    scale: Annotated[
        float,
        typer.Option(
            help=(
                "The head sees the image resized by this (1.5: 720x540, mIoU 0.606 clean vs 0.551 at 1.0); scored on "
                "the native masks."
            ),
            min=0.1,
            max=8.0,
        ),
    ] = 1.0,
    ignore_index: Annotated[
        int, typer.Option(help=("Mask value without a class (CamVid void: 11)."), min=0, max=255)
    ] = 11,
    sigma: SigmaOpt = "15,30,45,60",
    seed: SeedOpt = "0",
    control: ControlOpt = None,
    draws: DrawsOpt = 2000,
    limit: LimitOpt = None,
    quantize: QuantizeOpt = True,
    clean: CleanOpt = True,
    device: DeviceOpt = "auto",
    out: Annotated[Path, typer.Option("--out", "-o", help=("Folder for table3.md, table3.json, table3.png."))] = Path(
        "results/table3"
    ),
) -> None:
    """Table 3: mIoU (confusion summed over the images) of a frozen segmenter at each sigma for the arms noisy, CBM3D,
    separate, joint, cross-task (each only if its weights are given), extra --model arms, and clean."""
    with starting():
        from fastdenoise.evaluation.tables import Table3Config, find_segmenter_weights, table3, task_arms
    cbm3d = 0 if cbm3d and skipped_peer("cbm3d") else cbm3d

    images, masks = data / subset, data / f"{subset}annot"
    for folder in (images, masks):
        if not folder.is_dir():
            raise fail(f"{folder}: not a folder (expected the SegNet CamVid layout, e.g. val/ and valannot/)")
    weights = head_weights or find_segmenter_weights(head, data)
    extra = named_models(model)

    def build(progress):
        cfg = Table3Config(
            str(images),
            str(masks),
            sigma_list(sigma),
            seed_list(seed),
            control,
            draws,
            limit=limit,
            head=head,
            head_weights=str(weights) if weights else None,
            scale=scale,
            ignore_index=ignore_index,
            quantize=quantize,
            device=device,
        )
        arms = task_arms(separate, joint, cross_task, cbm3d, extra, device, cbm3d_cache, output_cache)
        return table3(cfg, arms, clean=clean, progress=progress)

    run_table("table 3", build, out)


@tables_app.command("split")
def split_cmd(
    labels: Annotated[
        Path,
        typer.Argument(
            metavar="LABELS", help=("CSV 'file,index' (imagenet-samples/labels.csv)."), exists=True, dir_okay=False
        ),
    ],
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help=("Where to write the split's CSV (pass it to fastdenoise train --labels).")),
    ],
    split: Annotated[Split, typer.Option(help="train = even rows (0-based), test = odd rows.")] = Split.train,
) -> None:
    """Write one half of a labels CSV: train a joint denoiser on --split train, then `tables table2 --split test`."""
    with starting():
        from fastdenoise.evaluation.tables import write_split_labels

    try:
        rows = write_split_labels(labels, split.value, out)
    except ValueError as err:
        raise fail(str(err)) from err
    which = {Split.train: "even", Split.test: "odd"}.get(split, "all")
    typer.echo(f"{plural(rows, 'row')} ({split.value}: {which} rows of {labels}) -> {out}")
