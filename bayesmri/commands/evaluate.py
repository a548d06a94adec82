"""``bayesmri evaluate OUT --reference DIR``: fastMRI-style per-volume PSNR/SSIM/NMSE of a folder of
reconstructions (fastMRI submission layout: ``reconstruction`` per file) against the references of the
same file names; a table on stdout and a JSON file (:mod:`bayesmri.evaluation`, ``docs/datasets.md``)."""
from __future__ import annotations

from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser) -> None:
    parser.add_argument("out", type=Path, help="folder of reconstructions (e.g. the --out of a dataset `bayesmri recon`)")
    parser.add_argument("--reference", type=Path, required=True, metavar="DIR",
                        help="folder of fastMRI-layout files with the references, same file names")
    parser.add_argument("--reference-key", default=None, metavar="NAME",
                        help="reference dataset (default: reconstruction_rss, else reconstruction_esc)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="where to write the JSON (default: OUT/evaluation.json)")


def run(args) -> int:
    from .. import io
    from ..evaluation import evaluate_folder, format_table

    res = evaluate_folder(args.out, args.reference, reference_key=args.reference_key)
    print(format_table(res.volumes, res.mean, res.std))
    if res.missing:
        print(f"{len(res.missing)} reference file(s) without a reconstruction, not scored: "
              f"{', '.join(res.missing[:5])}{', ...' if len(res.missing) > 5 else ''}")
    path = args.json if args.json is not None else Path(args.out) / "evaluation.json"
    io.save_json(path, res.to_json())
    print(f"wrote {path}")
    return 0
