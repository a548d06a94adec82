"""Files people open: PNG figures, NIfTI stacks, ``.npz`` / ``.h5`` arrays and JSON.

Every writer is atomic: it writes to a temporary file in the destination folder and renames it over
the target only once the write has succeeded, so an interrupted or failed run never leaves a half
written file behind (a failed write leaves no file at all).

Array conventions
-----------------
- A *slice* is ``(H, W)``; a *stack* of slices is ``(S, H, W)`` (slice first, as everywhere in
  bayesmri). Complex input is accepted; images are shown as magnitude.
- NIfTI stores the stack as ``(H, W, S)`` (in-plane axes first, slices last, the usual NIfTI
  convention), :func:`load_nifti` turns it back into ``(S, H, W)``.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

__all__ = [
    "atomic_path",
    "atomic_write",
    "atomic_dir",
    "folder_lock",
    "check_writable",
    "remove_stale_temporaries",
    "to_numpy",
    "save_png",
    "save_image_grid",
    "save_image_grid_native",
    "save_image_table",
    "save_nifti",
    "load_nifti",
    "save_npz",
    "load_npz",
    "save_h5",
    "load_h5",
    "save_json",
    "load_json",
    "png_bytes",
]


# --------------------------------------------------------------------------------------------------
# atomic writes
# --------------------------------------------------------------------------------------------------
def _suffixes(path: Path) -> str:
    # keep the full extension (".nii.gz") so libraries that pick the format by name still work
    name = path.name
    for ext in (".nii.gz", ".tar.gz"):
        if name.endswith(ext):
            return ext
    return path.suffix


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temp_prefix(path: Path) -> str:
    # ".<name>.<pid>-": the pid lets a later run tell a leftover of a killed process (remove it) from
    # the temporary file of a run still going on in the same folder (leave it).
    return f".{path.name}.{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike, name: str, *, legacy_age_s: float = 3600.0) -> list[Path]:
    """Remove temporary files/folders that :func:`atomic_path` / :func:`atomic_dir` left for ``name``.

    A process killed with SIGKILL (or a power cut) cannot clean up after itself; its leftovers are
    ``.<name>.<pid>-XXXX.tmp*`` in ``folder``. An entry is removed when its process no longer exists;
    entries in the older layout without a pid (``.<name>.XXXX.tmp*``) when older than
    ``legacy_age_s`` seconds. Returns the removed paths.
    """
    import re
    import shutil
    import time

    folder = Path(folder)
    if not folder.is_dir():
        return []
    # mkstemp's random part is [a-z0-9_]: no dot, so "out" never matches the files of "out.npz"
    pat = re.compile(re.escape(f".{name}.") + r"(?:(\d+)-)?[a-z0-9_]+\.tmp(?:\..*)?$")
    removed = []
    now = time.time()
    for entry in folder.iterdir():
        m = pat.match(entry.name)
        if m is None:
            continue
        try:
            if m.group(1) is not None:
                if _pid_alive(int(m.group(1))):  # includes this process
                    continue
            elif now - entry.lstat().st_mtime < legacy_age_s:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
        except FileNotFoundError:  # removed by someone else meanwhile
            continue
    return removed


#: Suffixes that name a file, not a folder: an output folder with one of them is refused (check_writable).
FILE_SUFFIXES = frozenset({".h5", ".hdf5", ".mrd", ".npz", ".npy", ".png", ".jpg", ".pdf", ".json", ".cfl", ".hdr",
                           ".mat", ".nii", ".gz", ".dat", ".txt", ".csv", ".safetensors", ".pt"})


def check_writable(path: str | os.PathLike, *, need_bytes: int = 0, folder: bool = True) -> Path:
    """Check, before any compute, that ``path`` (a folder to create or fill) can be written.

    Tries what the real write will do (make the parent, create and remove a file beside ``path`` and
    inside it if it exists) instead of ``os.access``, which says yes to root whatever the permission
    bits, and cannot see a path through a file or a full quota.
    ``need_bytes`` is compared with the free space of the file system. Raises ``OSError`` or
    ``ValueError`` with one line naming ``path``.
    """
    import shutil

    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise ValueError(f"output path {path} exists and is not a folder")
    if folder and not path.exists() and path.suffix.lower() in FILE_SUFFIXES:
        # 'recon x.h5 --out pula.h5' would otherwise create a folder named pula.h5
        raise ValueError(f"--out is an output folder (it receives the .h5 results, metrics.json and figures), but "
                         f"{path} has the file suffix {path.suffix!r}: name a folder such as {path.with_suffix('')}, "
                         "or create the folder first if that name is meant")
    parent = path.parent
    for up in [parent, *parent.parents]:
        if up.exists():
            if not up.is_dir():
                raise ValueError(f"cannot create {path}: {up} is a file, not a folder")
            break
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(f"cannot create the folder {parent} for {path}: {exc.strerror or exc}") from None
    for where in ([parent, path] if path.is_dir() else [parent]):
        try:
            fd, probe = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=where)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise OSError(f"cannot write to {where} (output {path}): {exc.strerror or exc}") from None
    if need_bytes > 0:
        free = shutil.disk_usage(parent).free
        if free < need_bytes:
            raise OSError(f"not enough free space for {path}: about {need_bytes / 2**20:.0f} MiB needed, "
                          f"{free / 2**20:.0f} MiB free")
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    The temporary file has the same extension as ``path`` (so format detection by name works) and
    is removed if the block raises. The parent folder is created if needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp" + _suffixes(path), dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.exists():  # flush to disk before the rename so a crash never leaves a torn file
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` through :func:`atomic_path`; returns ``path``."""
    with atomic_path(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
    return Path(path)


@contextlib.contextmanager
def folder_lock(path: str | os.PathLike) -> Iterator[None]:
    """Exclusive ``flock`` on the folder ``path`` itself (blocking): one writer at a time per folder.

    Runs that share an output folder hold it around read-merge-write of shared files, so that two
    concurrent runs never lose each other's entries. Locking the folder's own descriptor leaves no
    lock file behind among the outputs.
    """
    import fcntl

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _merge_json(old_path: Path, new_path: Path) -> None:
    # Top-level keys of the new file replace those of the old one; the old file's other keys stay;
    # a new value of null removes the key. An empty result removes the file.
    import warnings

    new = load_json(new_path)
    try:
        old = load_json(old_path) if old_path.exists() else {}
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        old = None
        why = f"is not valid JSON ({' '.join(str(exc).split())[:80]})"
    else:
        why = f"holds a JSON {type(old).__name__}, not an object"
    if not isinstance(old, dict):
        # Cannot be merged: set it aside instead of silently losing what it held.
        keep = old_path.with_name(old_path.name + ".corrupt")
        os.replace(old_path, keep)
        warnings.warn(f"{old_path} {why}; moved to {keep.name} and replaced by this run's entries", stacklevel=4)
        old = {}
    if not isinstance(new, dict):
        return
    merged = {k: v for k, v in {**old, **new}.items() if v is not None}
    if merged:
        save_json(new_path, merged)
    else:
        new_path.unlink()
        with contextlib.suppress(FileNotFoundError):
            old_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, replace: Sequence[str] = (), merge_json: Sequence[str] = ()) -> Iterator[Path]:
    """Yield an empty staging folder beside ``path``; move its contents into ``path`` on success.

    Used by commands that write several files: if anything fails, the staging folder is deleted
    and ``path`` is left as it was (not even created). On success each top-level entry replaces
    the entry of the same name in ``path``; other files already in ``path`` are kept.

    Parameters
    ----------
    path : folder to fill.
    replace : names in ``path`` that belong to this run's kind of output (e.g. every file a method
        writes): those the stage does not hold are removed in the same commit, so no stale file of an
        earlier run of the same method stays beside the new ones.
    merge_json : names of JSON files (objects) that are merged rather than replaced: the staged
        file's top-level keys replace the existing file's, other keys are kept; a staged value of
        ``null`` removes the key (and an empty result the file).

    The commit (merge, removals, renames) runs under :func:`folder_lock`, so concurrent runs into one
    folder serialise and lose nothing, with SIGINT/SIGTERM deferred until it is complete. A journal
    (``.bayesmri-commit.json`` in ``path``, present only during the renames) lets the next
    ``atomic_dir`` on the folder finish a commit whose process was killed (SIGKILL, power cut) half
    way. Leftover staging folders of killed runs are removed first.
    """
    import shutil

    from . import _interrupt

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"output path {path} exists and is not a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    if (path / COMMIT_JOURNAL).exists():  # a commit killed half way: finish it before anything else
        with _interrupt.deferred(), folder_lock(path):
            _roll_forward(path)
    remove_stale_temporaries(path.parent, path.name)
    stage = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        yield stage
        with _interrupt.deferred(), folder_lock(path):
            _roll_forward(path)
            for name in merge_json:
                if (stage / name).exists():
                    _merge_json(path / name, stage / name)
            remove = [name for name in replace
                      if not (stage / name).exists() and ((path / name).exists() or (path / name).is_symlink())]
            # The journal makes the renames below one step for every later reader of the folder: a
            # process killed among them leaves it, and the next atomic_dir on this folder finishes
            # the commit from the staging folder that the dead process could not remove.
            save_json(path / COMMIT_JOURNAL, {"stage": str(stage), "remove": remove,
                                              "move": sorted(e.name for e in stage.iterdir())})
            _apply_commit(path, stage, remove)
            (path / COMMIT_JOURNAL).unlink()
    finally:
        shutil.rmtree(stage, ignore_errors=True)


#: Name of the commit journal :func:`atomic_dir` keeps in the destination folder during its renames.
COMMIT_JOURNAL = ".bayesmri-commit.json"


def _apply_commit(path: Path, stage: Path, remove: Sequence[str]) -> None:
    # Idempotent, so that a roll-forward may repeat what a killed commit had already done.
    import shutil

    for name in remove:
        old = path / name
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        elif old.exists() or old.is_symlink():
            old.unlink()
    if not stage.is_dir():
        return
    for entry in sorted(stage.iterdir()):
        dest = path / entry.name
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        os.replace(entry, dest)


def _roll_forward(path: Path) -> None:
    """Finish the commit recorded in ``path``'s journal (call with :func:`folder_lock` held).

    A journal found under the lock belongs to a process that died during its renames (a live one
    would hold the lock). Its staging folder still holds the files not yet moved.
    """
    import shutil

    journal = path / COMMIT_JOURNAL
    if not journal.exists():
        return
    try:
        rec = load_json(journal)
        stage = Path(rec["stage"])
        remove = [str(n) for n in rec.get("remove", [])]
    except (ValueError, OSError, KeyError, TypeError):
        journal.unlink()  # torn journal: its commit had not started (the journal is written atomically)
        return
    if stage.parent == path.parent and stage.name.startswith(f".{path.name}."):  # never outside its place
        _apply_commit(path, stage, remove)
        shutil.rmtree(stage, ignore_errors=True)
    journal.unlink()


def to_numpy(x) -> np.ndarray:
    """Convert a torch tensor or array-like to a NumPy array (detached, on the CPU)."""
    try:
        import torch

        if isinstance(x, torch.Tensor):
            return x.detach().cpu().resolve_conj().numpy()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return np.asarray(x)


def _as_slice(image, name: str = "image") -> np.ndarray:
    a = to_numpy(image)
    a = np.squeeze(a) if a.ndim > 2 else a
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D slice (H, W), got shape {tuple(to_numpy(image).shape)}")
    if np.iscomplexobj(a):
        a = np.abs(a)
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains non-finite values")
    return a


# --------------------------------------------------------------------------------------------------
# PNG
# --------------------------------------------------------------------------------------------------
def _figure(rows: int, cols: int, tile: float):
    # The Agg canvas attached explicitly: no pyplot, so no global backend switch and no GUI.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(tile * cols, tile * rows), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _draw(ax, img: np.ndarray, title, cmap, vmin, vmax, colorbar: bool):
    im = ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.03)


def _save_fig(fig, path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    return Path(path)


def save_png(
    path,
    image,
    *,
    title: str | None = None,
    cmap: str = "gray",
    vmin: float | None = None,
    vmax: float | None = None,
    colorbar: bool = False,
) -> Path:
    """Write one 2-D slice (magnitude if complex) as a PNG figure.

    Parameters
    ----------
    path : str or Path
        Destination ``.png``.
    image : array-like or Tensor ``(H, W)`` (singleton axes are squeezed), real or complex.
    title, cmap, vmin, vmax, colorbar
        Matplotlib display options; ``vmin/vmax`` default to the image range.
    """
    img = _as_slice(image)
    fig = _figure(1, 1, 3.2 if colorbar else 3.0)
    _draw(fig.add_subplot(1, 1, 1), img, title, cmap, vmin, vmax, colorbar)
    return _save_fig(fig, path)


def save_image_grid(
    path,
    images: Sequence,
    titles: Sequence[str] | None = None,
    *,
    ncols: int | None = None,
    cmap: str = "gray",
    vmin: float | None = None,
    vmax: float | None = None,
    colorbar: bool = False,
) -> Path:
    """Write several 2-D slices side by side (shared display range unless ``vmin/vmax`` are None
    and the images differ; pass them to compare images on one scale)."""
    if len(images) == 0:
        raise ValueError("images must not be empty")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"got {len(titles)} titles for {len(images)} images")
    imgs = [_as_slice(im, f"images[{i}]") for i, im in enumerate(images)]
    ncols = ncols or min(len(imgs), 6)
    nrows = math.ceil(len(imgs) / ncols)
    fig = _figure(nrows, ncols, 2.6)
    for i, img in enumerate(imgs):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        _draw(ax, img, titles[i] if titles else None, cmap, vmin, vmax, colorbar)
    return _save_fig(fig, path)


def save_image_grid_native(
    path,
    images: Sequence,
    titles: Sequence[str] | None = None,
    *,
    ncols: int = 4,
    cmap: str = "gray",
    vmin: float | None = None,
    vmax: float | None = None,
    label: str | None = None,
    suptitle: str | None = None,
) -> Path:
    """Write slices side by side at full resolution (one PNG pixel per image pixel) with a colour bar.

    :func:`save_image_grid` draws every slice in a fixed 2.6-inch tile (about 220 px whatever the
    matrix); here the figure is sized from the images, each axes box is placed to cover exactly its
    image's pixels, and nearest-neighbour display keeps them unresampled. All slices share one
    display range (``vmin``/``vmax``, default the range of all of them) shown by a single colour bar.

    Parameters
    ----------
    path : destination ``.png``.
    images : 2-D slices ``(H, W)`` (magnitude if complex), of any sizes.
    titles : one per image, drawn above it, optional.
    ncols : images per row. cmap : matplotlib colour map. label : text beside the colour bar.
    suptitle : a line above the grid.
    """
    if len(images) == 0:
        raise ValueError("images must not be empty")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"got {len(titles)} titles for {len(images)} images")
    imgs = [_as_slice(im, f"images[{i}]") for i, im in enumerate(images)]
    lo = float(min(im.min() for im in imgs)) if vmin is None else float(vmin)
    hi = float(max(im.max() for im in imgs)) if vmax is None else float(vmax)
    if not hi > lo:  # a constant image still needs a non-empty colour range
        hi = lo + 1.0
    dpi = 100
    ncols = max(1, min(int(ncols), len(imgs)))
    nrows = math.ceil(len(imgs) / ncols)
    h = max(im.shape[0] for im in imgs)
    w = max(im.shape[1] for im in imgs)
    pad, head = 8, (18 if titles else 0)  # pixels: gap between tiles, title line
    top0 = pad + (22 if suptitle else 0)
    bar_w, bar_text = 14, 84 if label else 56  # colour bar width and room for its tick labels
    fig_w = max(pad + ncols * (w + pad) + bar_w + bar_text, 8 * len(suptitle or "") + 2 * pad)
    fig_h = top0 + nrows * (head + h + pad)
    fig = _figure(1, 1, 1.0)
    fig.set_size_inches(fig_w / dpi, fig_h / dpi)
    im_artist = None
    for i, img in enumerate(imgs):
        r, c = divmod(i, ncols)
        left = pad + c * (w + pad)
        top = top0 + r * (head + h + pad) + head
        ih, iw = img.shape
        ax = fig.add_axes([left / fig_w, 1 - (top + ih) / fig_h, iw / fig_w, ih / fig_h])
        im_artist = ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest", aspect="auto")
        ax.set_axis_off()
        if titles:
            ax.set_title(titles[i], fontsize=8, pad=3)
    grid_h = nrows * (head + h + pad) - pad - head
    if suptitle:
        fig.text(pad / fig_w, 1 - (pad + 12) / fig_h, suptitle, fontsize=10, va="baseline")
    cax = fig.add_axes([(pad + ncols * (w + pad)) / fig_w, 1 - (top0 + head + grid_h) / fig_h,
                        bar_w / fig_w, grid_h / fig_h])
    cb = fig.colorbar(im_artist, cax=cax)
    cb.ax.tick_params(labelsize=8)
    if label:
        cb.set_label(label, fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)  # no bbox "tight": it would move the pixel-exact boxes
    return Path(path)


def save_image_table(
    path,
    cells: Sequence[Sequence],
    row_labels: Sequence[str],
    columns: Sequence[Mapping],
    *,
    zoom: int | None = None,
    suptitle: str | None = None,
) -> Path:
    """Write a table of images, one display scale and colour bar per column, at full resolution.

    Each column has its own colour map and range (e.g. magnitude in grey, |error| and std in one colour
    map on one shared range, so that the two can be compared pixel by pixel); the colour bar sits under
    the column heading. Every image pixel is ``zoom x zoom`` PNG pixels (nearest neighbour, nothing
    resampled); ``zoom`` defaults to the smallest integer that makes a tile at least 128 px.

    Parameters
    ----------
    path : destination ``.png``.
    cells : rows of images ``(H, W)`` (magnitude if complex), one per column, ``None`` for an empty cell;
        all images of the table have one size.
    row_labels : one per row, drawn left of it (may hold a line break).
    columns : one mapping per column: ``title``, ``cmap`` (default grey), ``vmin``/``vmax`` (default the
        range of the column's images), ``label`` (text under the colour bar, optional).
    suptitle : a line above the table.
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    if len(cells) == 0 or len(cells) != len(row_labels):
        raise ValueError(f"need one label per row, got {len(row_labels)} labels for {len(cells)} rows")
    ncols = len(columns)
    if any(len(r) != ncols for r in cells):
        raise ValueError(f"every row must have {ncols} cells (None for an empty one)")
    imgs = [[None if im is None else _as_slice(im, f"cells[{i}][{j}]") for j, im in enumerate(r)]
            for i, r in enumerate(cells)]
    shapes = {im.shape for r in imgs for im in r if im is not None}
    if len(shapes) != 1:
        raise ValueError(f"the images of a table must have one size, got {sorted(shapes)}")
    (h, w), = shapes
    zoom = max(1, math.ceil(128 / max(h, w))) if zoom is None else max(1, int(zoom))
    th, tw = h * zoom, w * zoom
    dpi, pad = 100, 8
    # room for the longest label line (about 6 px per character at font size 8)
    label_w = max(64, 12 + 6 * max((len(ln) for lab in row_labels for ln in str(lab).split("\n")), default=0))
    top0 = pad + (22 if suptitle else 0)
    head = 16 + 10 + 18 + 6  # column title, colour bar, its tick labels (and the bar's label), gap
    fig_w = label_w + ncols * (tw + pad) + pad
    fig_h = top0 + head + len(imgs) * (th + pad)
    fig = _figure(1, 1, 1.0)
    fig.set_size_inches(fig_w / dpi, fig_h / dpi)

    def box(left, top, width, height):  # pixel box (from the top-left corner) -> figure fraction
        return [left / fig_w, 1 - (top + height) / fig_h, width / fig_w, height / fig_h]

    norms = []
    for j, col in enumerate(columns):
        vals = [im for r in imgs for im in (r[j],) if im is not None]
        lo = float(col["vmin"]) if col.get("vmin") is not None else min((float(v.min()) for v in vals), default=0.0)
        hi = float(col["vmax"]) if col.get("vmax") is not None else max((float(v.max()) for v in vals), default=1.0)
        if not hi > lo:
            hi = lo + 1.0
        norms.append(Normalize(lo, hi))
        left = label_w + j * (tw + pad)
        fig.text((left + tw / 2) / fig_w, 1 - (top0 + 12) / fig_h, col.get("title", ""), fontsize=9, ha="center")
        cax = fig.add_axes(box(left, top0 + 16, tw, 10))
        cb = fig.colorbar(ScalarMappable(norms[j], col.get("cmap", "gray")), cax=cax, orientation="horizontal")
        lo, hi = norms[j].vmin, norms[j].vmax
        cb.set_ticks([lo, (lo + hi) / 2, hi], labels=[f"{v:.3g}" for v in (lo, (lo + hi) / 2, hi)])
        cb.ax.tick_params(labelsize=7, length=2, pad=1)
        ends = cb.ax.get_xticklabels()  # the end labels inside the bar's width: no clash with the next column
        ends[0].set_horizontalalignment("left")
        ends[-1].set_horizontalalignment("right")
        if col.get("label"):
            cb.set_label(col["label"], fontsize=7, labelpad=1)
    for i, row in enumerate(imgs):
        top = top0 + head + i * (th + pad)
        fig.text(pad / fig_w, 1 - (top + th / 2) / fig_h, row_labels[i], fontsize=8, va="center", ha="left")
        for j, img in enumerate(row):
            if img is None:
                continue
            ax = fig.add_axes(box(label_w + j * (tw + pad), top, tw, th))
            ax.imshow(img, cmap=columns[j].get("cmap", "gray"), norm=norms[j], interpolation="nearest", aspect="auto")
            ax.set_axis_off()
    if suptitle:
        fig.text(pad / fig_w, 1 - (pad + 12) / fig_h, suptitle, fontsize=10, va="baseline")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)  # no bbox "tight": it would move the pixel-exact boxes
    return Path(path)


def png_bytes(path) -> bytes:
    """Read a PNG file and check its signature (used to inline images in HTML reports)."""
    data = Path(path).read_bytes()
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError(f"{path} is not a PNG file")
    return data


# --------------------------------------------------------------------------------------------------
# NIfTI
# --------------------------------------------------------------------------------------------------
def save_nifti(path, stack, *, voxel_size: Sequence[float] = (1.0, 1.0, 1.0), magnitude: bool = False) -> Path:
    """Write a stack of slices ``(S, H, W)`` (or one slice ``(H, W)``) as NIfTI-1.

    Complex data is stored as NIfTI complex64 unless ``magnitude=True``; real data as float32.
    The file stores ``(H, W, S)`` with a diagonal affine of ``voxel_size`` (mm).
    ``path`` should end in ``.nii`` or ``.nii.gz``.
    """
    import nibabel as nib

    name = str(path)
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        raise ValueError(f"NIfTI path must end in .nii or .nii.gz, got {name!r}")
    a = to_numpy(stack)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"stack must have shape (S, H, W) or (H, W), got {tuple(a.shape)}")
    if np.iscomplexobj(a):
        a = np.abs(a).astype(np.float32) if magnitude else a.astype(np.complex64)
    else:
        a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise ValueError("stack contains non-finite values")
    vol = np.ascontiguousarray(np.moveaxis(a, 0, -1))  # (H, W, S)
    affine = np.diag([float(v) for v in voxel_size] + [1.0])
    img = nib.Nifti1Image(vol, affine)
    img.header.set_xyzt_units("mm")
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return Path(path)


def load_nifti(path) -> np.ndarray:
    """Read a NIfTI written by :func:`save_nifti` back as ``(S, H, W)``."""
    import nibabel as nib

    img = nib.load(str(path))
    vol = np.asarray(img.dataobj)
    if vol.ndim == 2:
        vol = vol[..., None]
    return np.moveaxis(vol, -1, 0)


# --------------------------------------------------------------------------------------------------
# npz / h5 / json
# --------------------------------------------------------------------------------------------------
def _arrays(arrays: Mapping) -> dict[str, np.ndarray]:
    out = {}
    for k, v in arrays.items():
        if v is None:
            continue
        if not isinstance(k, str) or not k:
            raise ValueError(f"array names must be non-empty strings, got {k!r}")
        out[k] = to_numpy(v)
    return out


def save_npz(path, **arrays) -> Path:
    """Write named arrays (tensors allowed, ``None`` skipped) to a compressed ``.npz``."""
    if not str(path).endswith(".npz"):
        raise ValueError(f"npz path must end in .npz, got {str(path)!r}")
    data = _arrays(arrays)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object stops numpy from appending another ".npz"
            np.savez_compressed(f, **data)
    return Path(path)


def load_npz(path) -> dict[str, np.ndarray]:
    """Read every array of an ``.npz`` (pickles refused)."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def save_h5(path, arrays: Mapping, attrs: Mapping | None = None) -> Path:
    """Write named arrays as gzip-compressed HDF5 datasets, plus scalar/string file attributes."""
    import h5py

    data = _arrays(arrays)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            for k, v in data.items():
                if v.ndim == 0:
                    f.create_dataset(k, data=v)
                else:
                    f.create_dataset(k, data=v, compression="gzip", compression_opts=4)
            for k, v in (attrs or {}).items():
                if v is not None:
                    f.attrs[k] = v
    return Path(path)


def load_h5(path) -> tuple[dict[str, np.ndarray], dict]:
    """Read every top-level dataset and attribute of an HDF5 file written by :func:`save_h5`."""
    import h5py

    with h5py.File(path, "r") as f:
        arrays = {k: f[k][()] for k in f.keys() if isinstance(f[k], h5py.Dataset)}
        attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
    return arrays, attrs


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"object of type {type(o).__name__} is not JSON serialisable")


def save_json(path, obj) -> Path:
    """Write ``obj`` as indented JSON (NaN/Inf refused: the schema has none)."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default, allow_nan=False)
    return atomic_write(path, text + "\n")


def load_json(path):
    return json.loads(Path(path).read_text())
