"""The demo: every registered method on built-in test slices, as an HTML report (``bayesmri demo``).

:func:`run_demo` simulates 8-coil acquisitions of the built-in ``test`` split (a different brain from the
training data) with GRO R=4 and Poisson-disc R=8 masks, runs each method (its ``"demo"`` preset,
:func:`bayesmri.methods.preset_options`), and writes into ``out``:

- ``report.html``: self-contained (images inlined), metrics tables, calibration slot, figures,
- ``metrics.json``: ``{method: {pattern: {...}}}`` (``docs/metrics_schema.md``),
- ``figures/<pattern>/``: per slice ``slice_<i>.png`` (every method's magnitude, |error|, posterior std and
  one sample; the report's tabs) and ``mask_<i>.png``; per method ``<method>_mean.png``, ``<method>_error.png``
  and, for samplers, ``<method>_std.png`` (all slices at full resolution); ``calibration.png``. The |error|
  and std maps of every method, slice and pattern share one colour scale.

It prints the metrics table (:func:`format_table`: PSNR, SSIM, NMSE, time per sample) and shows a progress bar.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from .physics.masks import pattern_name

__all__ = ["run_demo", "format_table", "parse_patterns", "demo_methods", "DEFAULT_PATTERNS", "DEFAULT_SLICES",
           "DEFAULT_SAMPLES", "DEFAULT_SIZE", "DEMO_EXCLUDED", "MAPS_LABELS", "REFERENCE_LABELS"]

#: (mask pattern, acceleration) pairs the demo runs; names as in metrics.json ("gro-r4", ...).
DEFAULT_PATTERNS = (("gro", 4), ("poisson", 8))
DEFAULT_SLICES = 2
DEFAULT_SAMPLES = 4
#: 128 x 128 (1.75 mm): every method runs there with the same shipped weights it uses on real scans (the
#: score and PoGMDM priors are applied at any size; CNF/cINN reconstruct at their 64 x 64 from the central
#: k-space, ``bayesmri.flows.sizes``). Two slices per pattern keep the demo under 5 minutes on 2 cores
#: (``docs/realsize.md``); ``--size 64`` gives the earlier demo.
DEFAULT_SIZE = 128


def parse_patterns(text: str) -> tuple:
    """``((pattern, R), ...)`` of ``"gro-r4,poisson-r8"`` (``--patterns``); one-line ``ValueError`` otherwise."""
    out = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            pat, r = item.rsplit("-r", 1)
            out.append((pat, float(r)))
        except ValueError:
            raise ValueError(f"pattern {item!r} must look like NAME-rR, e.g. gro-r4 or poisson-r8") from None
    if not out:
        raise ValueError("--patterns is empty")
    return tuple(out)



#: Registered methods the default demo leaves out, with why (``--methods`` runs them): annealed ULA needs
#: hundreds of levels to converge (480 NFE in docs/samplers.md); at 128 x 128 that alone exceeds the
#: demo's 5-minute budget, and at 40 levels its mean is below zero-filled (measured: docs/realsize.md).
DEMO_EXCLUDED = {"ula-annealed": "needs hundreds of levels, beyond the demo's 5-minute budget at 128x128; "
                                 "`--methods ula-annealed` runs it with 40 levels"}


def demo_methods(text: str | None) -> list[str]:
    """The demo's methods: every registered one but :data:`DEMO_EXCLUDED` for None, else the registered names
    of the comma-separated ``text`` (``--methods``), each once; one-line ``ValueError`` for an unknown one."""
    from .methods import available_methods, method_info

    if text is None:
        return [m for m in available_methods() if m not in DEMO_EXCLUDED]
    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise ValueError(f"--methods is empty; available methods: {', '.join(available_methods())}")
    unknown = [m for m in names if m not in available_methods()]
    if unknown:
        raise ValueError(
            f"unknown method(s) {', '.join(map(repr, unknown))}; available methods: {', '.join(available_methods())}"
        )
    for m in names:
        method_info(m)
    return list(dict.fromkeys(names))


def format_table(metrics: dict) -> str:
    """The printed table: one row per (pattern, method) with PSNR, SSIM, NMSE and time."""
    head = f"{'pattern':<12} {'method':<10} {'PSNR[dB]':>9} {'SSIM':>7} {'NMSE':>9} {'cPSNR':>7} {'s/sample':>9} {'P':>3}"
    lines = [head, "-" * len(head)]
    patterns = list(dict.fromkeys(p for per in metrics.values() for p in per))
    for pat in patterns:
        for m, per in metrics.items():
            r = per.get(pat)
            if r is None:
                continue
            lines.append(
                f"{pat:<12} {m:<10} {r['psnr']:>9.2f} {r['ssim']:>7.4f} {r['nmse']:>9.4g} "
                f"{r.get('cpsnr', float('nan')):>7.2f} {r['time_per_sample_s']:>9.3g} {r['n_samples']:>3d}"
            )
    return "\n".join(lines)


def run_demo(
    out,
    methods=None,
    *,
    n_slices: int = DEFAULT_SLICES,
    device="cpu",
    n_samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    size: int | None = None,
    patterns=DEFAULT_PATTERNS,
    coils: int = 8,
    snr: float = 30.0,
    maps: str = "true",
    progress: bool = True,
    stream=None,
    skip_failures: bool | None = None,
) -> dict:
    """Run the demo and write its outputs into ``out``; return the metrics dictionary.

    ``methods`` is a list of registered names (default: all). ``maps`` chooses the coil maps the
    methods use (``"true"``: the simulation's; ``"espirit"``: estimated, then the reference is the
    ESPIRiT combination of the true coil images, see :func:`bayesmri.methods.reference_image`). Everything is
    written into a staging folder first, so an interrupted demo leaves ``out`` untouched.

    ``skip_failures`` (default: True when ``methods`` is None, i.e. "every registered method"): a
    method that raises (for example a learned method whose weights are not installed) is reported
    as skipped, with its error, in the printed output and the report, and the demo goes on; with
    False its error stops the demo.

    Every method is run first; the figures follow, so that the |error| and std maps of all methods,
    slices and patterns share one colour scale (:func:`_error_scale`).
    """
    from tqdm.auto import tqdm

    from . import __version__, io
    from .methods import method_info
    from .report import ReportSection, write_report
    from ._validate import resolve_device
    from .data.simulate import simulate_builtin
    from .methods import (calibration_numbers, evaluate_per_slice, preset_options, reference_image, run_method,
                           schema_row)

    stream = stream if stream is not None else sys.stdout
    if skip_failures is None:
        skip_failures = methods is None
    skipped: dict[str, str] = {}
    names = demo_methods(",".join(methods) if methods is not None else None)
    if int(n_slices) < 1:
        raise ValueError(f"--slices must be >= 1, got {n_slices}")
    if int(n_samples) < 1:
        raise ValueError(f"--samples must be >= 1, got {n_samples}")
    if maps not in ("true", "espirit"):
        raise ValueError(f"maps must be 'true' or 'espirit', got {maps!r}")
    dev = resolve_device(str(device))
    t_start = time.perf_counter()

    metrics: dict = {m: {} for m in names}
    runs = []  # per pattern: (pname, pat, R, samples, target, {method: result})
    bar = tqdm(total=len(patterns) * (len(names) + 1) * int(n_slices), desc="demo", unit="slice",
               disable=not progress, file=sys.stderr)
    tick = lambda: bar.update(1)  # noqa: E731
    with io.atomic_dir(out) as stage:
        for k, (pat, R) in enumerate(patterns):
            pname = pattern_name(pat, R)
            bar.set_postfix_str(f"{pname}: simulating")
            samples = simulate_builtin(
                split="test", n_slices=n_slices, pattern=pat, acceleration=R, coils=coils, snr=snr,
                seed=seed + 1000 * k, size=size,
            )
            target = torch.stack([reference_image(s, maps) for s in samples]).cpu()  # (S, H, W) complex
            bar.update(len(samples))
            results = {"zf": run_method("zf", samples, device=dev, maps=maps)}
            for m in names:
                if m in skipped:
                    bar.update(len(samples))
                    continue
                bar.set_postfix_str(f"{pname}: {m}")
                info = method_info(m)
                if m == "zf":
                    res = results["zf"]
                    bar.update(len(samples))
                else:
                    try:
                        res = run_method(m, samples, n_samples=n_samples, seed=seed, device=dev, maps=maps, on_slice=tick,
                                         options=preset_options(m, "demo"))
                    except Exception as exc:  # noqa: BLE001 - reported, and only when skipping is asked for
                        if not skip_failures:
                            raise
                        msg = str(exc).splitlines()[0] if str(exc) else ""
                        skipped[m] = f"{type(exc).__name__}: {msg}"
                        tqdm.write(f"demo: skipping method {m!r} ({skipped[m]})", file=sys.stderr)
                        bar.update(len(samples))
                        continue
                    results[m] = res
                row = schema_row(res, target)
                row["per_slice"] = evaluate_per_slice(res.mean.reshape(target.shape), target)
                if m != "zf" and (cal := calibration_numbers(res, target.abs())):
                    row["calibration"] = cal
                metrics[m][pname] = row
            runs.append((pname, pat, R, samples, target, results))
        bar.set_postfix_str("figures")
        shown = [m for m in names if m not in skipped]
        metrics = {m: per for m, per in metrics.items() if m not in skipped}
        emax = _error_scale(runs)
        sections, calibration = [], []
        for pname, pat, R, samples, target, results in runs:
            sec, cal_fig = _pattern_section(stage / "figures" / pname, pname, pat, R, samples, target, results,
                                            shown, {m: metrics[m].get(pname) for m in shown}, emax, coils, snr, maps)
            sections.append(sec)
            if cal_fig is not None:
                calibration.append(cal_fig)
        bar.close()
        sections.append(ReportSection("Methods", text="", table={
            m: method_info(m).description for m in shown}))
        if skipped:
            sections.append(ReportSection(
                "Skipped methods", [],
                text="; ".join(f"{m}: {why}" for m, why in skipped.items()),
            ))
        io.save_json(stage / "metrics.json", metrics)
        wall = time.perf_counter() - t_start
        write_report(
            stage / "report.html",
            "bayesmri demo",
            metrics=metrics,
            sections=sections,
            calibration=calibration,
            intro="Reconstructions of simulated multi-coil acquisitions of the built-in test slices "
                  "(Colin27, a different brain from the training data). Every slice is behind the tabs of each "
                  "pattern; click an image to enlarge it.",
            meta={
                "bayesmri": __version__,
                "methods": ", ".join(shown),
                **({"left out of the default demo": "; ".join(f"{m}: {why}" for m, why in DEMO_EXCLUDED.items())}
                   if methods is None else {}),
                "skipped": ", ".join(skipped) or "none",
                "patterns": ", ".join(pattern_name(p, r) for p, r in patterns),
                "slices per pattern": n_slices,
                "image size": f"{runs[0][4].shape[-2]} x {runs[0][4].shape[-1]}" if runs else "",
                "samples per slice (sampling methods)": n_samples,
                "simulated coils": coils,
                "k-space SNR [dB]": snr,
                "coil maps given to the methods": MAPS_LABELS[maps],
                "reference (ground truth)": REFERENCE_LABELS[maps],
                "|error| and std colour scale": f"0 to {emax:.3g} for every method, slice and pattern",
                "seed": seed,
                "device": str(dev),
                "torch threads": torch.get_num_threads(),
                "wall time [s]": f"{wall:.1f}",
            },
        )
    print(format_table(metrics), file=stream)
    for m, why in skipped.items():
        print(f"skipped {m}: {why}", file=stream)
    print(f"wrote {Path(out) / 'report.html'} and metrics.json in {time.perf_counter() - t_start:.1f} s", file=stream)
    return metrics


#: What the report says about ``--maps`` and the reference it implies (honest labels: "true" is the
#: simulation's own maps, which no real acquisition has).
MAPS_LABELS = {"true": "the simulated (true) coil maps, known exactly: not estimated, as no real scan allows",
               "espirit": "ESPIRiT maps estimated from each slice's calibration data"}
REFERENCE_LABELS = {"true": "the simulated noise-free image",
                    "espirit": "the ESPIRiT coil combination of the simulated noise-free coil images"}


def _error_scale(runs) -> float:
    """One upper limit for every |error| and std map of a demo: the 99th percentile of the |error| of
    every method but zero-filled (zero-filled, an order worse, would wash the others out), over all
    patterns and slices; larger values saturate, and the colour bar says so."""
    vals = []
    for _, _, _, _, target, results in runs:
        for m, res in results.items():
            if m != "zf":
                vals.append((res.mean.reshape(target.shape).abs() - target.abs()).abs().reshape(-1))
    if not vals:
        vals = [(res.mean.reshape(t.shape).abs() - t.abs()).abs().reshape(-1) for *_, t, r in runs for res in r.values()]
    v = torch.cat(vals).double()
    return float(torch.quantile(v[:: max(1, v.numel() // 1_000_000)], 0.99)) or 1.0


def _pattern_section(fig_dir, pname, pat, R, samples, target, results, shown, rows, emax, coils, snr, maps):
    """The report section of one pattern (a tab per slice: every method's magnitude, |error|, std and one
    sample on shared scales, and the mask) and its calibration plot; writes the figures into ``fig_dir``."""
    from . import io
    from .physics.masks import TWO_D_NOTE
    from .report import ReportFigure, ReportSection, calibration_gain, plot_calibration
    from .methods import n_samples_of

    S = target.shape[0]
    vmax = float(target.abs().max())
    order = (["zf"] if "zf" not in shown else []) + shown
    shape = tuple(target.shape)
    maps_of = {m: (results[m].mean.reshape(shape), None if results[m].std is None or n_samples_of(results[m]) < 2
                   else results[m].std.reshape(shape)) for m in order if m in results}
    err = {m: (mean.abs() - target.abs()).abs() for m, (mean, _) in maps_of.items()}
    # per method, all slices: the files users open outside the report (same scales as the report)
    for m, (mean, std) in maps_of.items():
        idx = [f"slice {s.metadata.get('slice', i)}" for i, s in enumerate(samples)]
        io.save_image_grid_native(fig_dir / f"{m}_mean.png", list(mean), idx, vmin=0, vmax=vmax, label="magnitude",
                                  suptitle=f"{pname}: {m}", ncols=min(S, 4))
        io.save_image_grid_native(fig_dir / f"{m}_error.png", list(err[m]), idx, vmin=0, vmax=emax, cmap="inferno",
                                  label="|error|", suptitle=f"{pname}: {m} |error|", ncols=min(S, 4))
        if std is not None:
            io.save_image_grid_native(fig_dir / f"{m}_std.png", list(std), idx, vmin=0, vmax=emax, cmap="inferno",
                                      label="posterior std", suptitle=f"{pname}: {m} std", ncols=min(S, 4))
    columns = [dict(title="magnitude", vmin=0, vmax=vmax),
               dict(title="|error|", cmap="inferno", vmin=0, vmax=emax, label="one scale: |error| and std"),
               dict(title="posterior std", cmap="inferno", vmin=0, vmax=emax, label="of the samples (complex)"),
               dict(title="one sample", vmin=0, vmax=vmax)]
    tabs = []
    for i, smp in enumerate(samples):
        cells, labels = [[target[i], None, None, None]], ["ground truth"]
        for m, (mean, std) in maps_of.items():
            res, row = results[m], rows.get(m) or {}
            one = res.samples[0].reshape(shape)[i] if std is not None else None
            cells.append([mean[i], err[m][i], None if std is None else std[i], one])
            psnr = (row.get("per_slice") or {}).get("psnr", [None] * S)[i]
            flags = (row.get("calibration") or {}).get("flags") or []
            labels.append("\n".join([m if m != "zf" or "zf" in shown else "zero-filled"]
                                    + ([f"{psnr:.2f} dB"] if psnr is not None else []) + [f"[{f}]" for f in flags]))
        sl = smp.metadata.get("slice", i)
        table = io.save_image_table(fig_dir / f"slice_{i}.png", cells, labels, columns,
                                    suptitle=f"{pname}, test slice {sl}: PSNR of each method on this slice")
        mask = io.save_png(fig_dir / f"mask_{i}.png", _mask_image(smp), title=f"mask {pname}", vmin=0, vmax=1)
        tabs.append((f"slice {sl}", [ReportFigure(table, f"{pname}, slice {sl}: magnitude, |error| beside the "
                                                         f"posterior std on one scale, one sample"),
                                     ReportFigure(mask, f"sampling mask of slice {sl}")]))
    two_d = f" Note: {TWO_D_NOTE}." if pat in ("poisson", "gaussian2d") else ""
    sec = ReportSection(
        f"{pname}: {coils} coils, {pat} mask, R={R:g}" + (" (2-D mask: not realisable in 2-D imaging)" if two_d else ""),
        text=(f"{S} built-in test slices of size {shape[-2]}x{shape[-1]}, SNR {snr:g} dB; {MAPS_LABELS[maps]}; "
              f"reference: {REFERENCE_LABELS[maps]}. The |error| (of the magnitude of the mean) and the posterior std "
              f"share one colour scale for every method, slice and pattern (0 to {emax:.3g}): where a sampler is "
              f"calibrated its std map looks like its error map.{two_d}"),
        slices=tabs,
    )
    curves, flags = {}, {}
    for m in shown:
        res = results.get(m)
        if res is not None and m != "zf" and n_samples_of(res) > 1:
            curves[m] = calibration_gain(res.samples.abs(), target.abs())
            flags[m] = ((rows.get(m) or {}).get("calibration") or {}).get("flags") or []
    cal_fig = None
    if curves:
        cal_fig = ReportFigure(plot_calibration(fig_dir / "calibration.png", curves, title=f"{pname} (magnitudes)",
                                                flags=flags), f"calibration {pname}")
    return sec, cal_fig


def _mask_image(sample) -> torch.Tensor:
    H, W = sample.img_shape
    m = sample.mask.detach().cpu().to(torch.float32)
    while m.ndim > 2:
        m = m[0]
    return m.reshape(1, -1).expand(H, W) if m.ndim == 1 else m.expand(H, W)
