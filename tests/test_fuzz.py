"""Property-based fuzzing (hypothesis) of the fastMRI reader and of the command-line options (issue 22).

Property: no input produces anything but a correct result or a clean, one-line error that names the
file (reader) or the command (CLI). Examples are few and each has a deadline, so CI stays fast.
"""
import contextlib
import io as _io
import itertools
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from bayesmri.data.fastmri import make_ismrmrd_header, read_fastmri_h5  # noqa: E402

_count = itertools.count()
# CI: 100 fixed (derandomized) examples per test, ~15 s in all. FUZZ_N=2000 explores with fresh random
# examples (how the bugs fixed with this test were found: a header size "abc", a seed of 2**70, a
# bayesmri_num_acs attribute "x", a Poisson mask whose calibration block fills the budget).
_N = os.environ.get("FUZZ_N")
FUZZ = settings(max_examples=int(_N or 100), deadline=5000, derandomize=not _N, print_blob=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# ---------------------------------------------------------------------------------------------- files
dims = st.integers(0, 6)
finite_or_not = st.one_of(st.floats(-1e3, 1e3), st.sampled_from([0.0, np.nan, np.inf, -np.inf, 1e-30, 1e30]))


@st.composite
def complex_array(draw, shape):
    n = int(np.prod(shape))
    re = draw(st.lists(finite_or_not, min_size=min(n, 4), max_size=min(n, 4)))
    base = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).standard_normal((2, *shape))
    a = np.asarray(base[0] + 1j * base[1]).astype(np.complex64)
    flat = a.reshape(-1)
    for i, v in enumerate(re):  # plant a few special values
        flat[(i * 7919) % max(n, 1)] = v
    if draw(st.booleans()) and n and a.ndim:  # undersample like a real file: zero columns
        a[..., :: draw(st.integers(2, 4))] = 0
    return a


@st.composite
def fastmri_file(draw):
    """A dict describing an .h5 file: mostly valid fastMRI layouts with one or more things broken."""
    spec = {}
    kind = draw(st.sampled_from(["valid", "valid", "valid", "missing", "real", "rank", "group", "bytes", "c128",
                                 "declared"]))
    S, C, H, W = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 12)), draw(st.integers(1, 12))
    if kind == "valid":
        spec["kspace"] = draw(complex_array((S, C, H, W)) if draw(st.booleans()) else complex_array((S, H, W)))
    elif kind == "real":
        spec["kspace"] = np.ones((S, C, H, W), np.float32)
    elif kind == "rank":
        spec["kspace"] = draw(complex_array(tuple(draw(st.lists(dims, min_size=0, max_size=5)))))
    elif kind == "group":
        spec["kspace"] = "group"
    elif kind == "bytes":
        spec["kspace"] = np.bytes_(b"not k-space")
    elif kind == "c128":  # double precision, possibly beyond float32's range
        with np.errstate(all="ignore"):  # the planted inf/nan times the factor
            spec["kspace"] = draw(complex_array((S, C, H, W))).astype(np.complex128) * draw(
                st.sampled_from([1.0, 1e-300, 1e300]))
    elif kind == "declared":  # a huge shape with no data written (HDF5 fill value)
        spec["kspace"] = ("declared", (S, C, 10**6, 10**6))
    hdr = draw(st.sampled_from(["valid", "valid", "missing", "garbage", "nomatrix", "badint", "huge"]))
    spec["header"] = {
        "valid": make_ismrmrd_header((H, W, 1), (H, W, 1)),
        "missing": None,
        "garbage": draw(st.binary(max_size=40)),
        "nomatrix": "<ismrmrdHeader><encoding/></ismrmrdHeader>",
        "badint": make_ismrmrd_header((H, W, 1), (H, W, 1)).replace(f"<x>{H}</x>", "<x>abc</x>", 1),
        "huge": make_ismrmrd_header((10**12, 10**12, 1), (10**12, W, 1)),
    }[hdr]
    ref = draw(st.sampled_from(["none", "ok", "ok", "fewer", "complex", "rank2", "nan", "big"]))
    if ref != "none":
        shape = {"fewer": (max(S - 1, 0), H, W), "rank2": (H, W), "big": (S, 5 * H, 5 * W)}.get(ref, (S, H, W))
        r = np.abs(np.random.default_rng(1).standard_normal(shape)).astype(np.float32)
        if ref == "complex":
            r = r.astype(np.complex64)
        if ref == "nan" and r.size:
            r.reshape(-1)[0] = np.nan
        spec["reconstruction_rss"] = r
    m = draw(st.sampled_from(["none", "ones", "random", "wrong_shape", "string"]))
    spec["mask"] = {"none": None, "ones": np.ones(W, bool), "random": np.arange(W) % 2 == 0,
                    "wrong_shape": np.ones(W + 3, bool), "string": np.bytes_(b"mask")}[m]
    spec["num_acs"] = draw(st.sampled_from([None, np.array([4, 4]), np.array([0]), np.bytes_(b"x")]))
    spec["truncate"] = draw(st.sampled_from([None, None, None, 0.1, 0.5, 0.9]))
    return spec


def _write(spec, folder: Path) -> Path:
    import h5py

    path = folder / f"f{next(_count)}.h5"
    with h5py.File(path, "w") as f:
        k = spec.get("kspace")
        if isinstance(k, str):
            f.create_group("kspace")
        elif isinstance(k, tuple):
            f.create_dataset("kspace", shape=k[1], dtype=np.complex64, chunks=(1, 1, 64, 64))
        elif k is not None:
            f["kspace"] = k
        if spec["header"] is not None:
            h = spec["header"]
            f["ismrmrd_header"] = np.bytes_(h.encode() if isinstance(h, str) else h)
        if "reconstruction_rss" in spec:
            f["reconstruction_rss"] = spec["reconstruction_rss"]
        if spec["mask"] is not None:
            f["mask"] = spec["mask"]
        if spec["num_acs"] is not None:
            f.attrs["bayesmri_num_acs"] = spec["num_acs"]
    if spec["truncate"]:
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * spec["truncate"])])
    return path


def _clean(exc: BaseException, path: Path):
    """A clean error: ValueError/OSError, one line, naming the file."""
    assert isinstance(exc, (ValueError, OSError)), f"{type(exc).__name__}: {exc}"
    msg = str(exc)
    assert "\n" not in msg.strip(), msg
    assert str(path) in msg, msg


@FUZZ
@given(spec=fastmri_file())
def test_fastmri_reader_gives_a_result_or_a_clean_error(spec, tmp_path):
    import torch

    path = _write(spec, tmp_path)
    try:
        vol = read_fastmri_h5(path)
        for i in range(vol.num_slices):
            k = vol.read_slice(i)
            assert k.dtype == torch.complex64 and k.ndim == 3 and k.shape[-2:] == tuple(vol.shape[-2:])
            t = vol.read_target(i)
            assert t is None or (t.ndim == 2 and not t.is_complex())
    except Exception as exc:  # noqa: BLE001 - the property is about every exception
        _clean(exc, path)


@FUZZ
@given(spec=fastmri_file())
def test_recon_loader_gives_valid_samples_or_a_clean_error(spec, tmp_path):
    import torch

    from bayesmri.data.recon_input import load_input_samples

    path = _write(spec, tmp_path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            samples, reference, pattern = load_input_samples(path)
    except Exception as exc:  # noqa: BLE001
        _clean(exc, path)
        return
    assert samples
    for s in samples:
        H, W = s.img_shape
        assert torch.isfinite(torch.view_as_real(s.kspace)).all()
        assert s.mask.shape in ((W,), (H, W)) and bool(((s.mask == 0) | (s.mask == 1)).all())
        assert np.isfinite(s.scale) and s.scale > 0
    if reference is not None:
        assert torch.isfinite(reference).all() and reference.shape[0] == len(samples)


# ---------------------------------------------------------------------------------------------- options
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from bayesmri.cli import main

    path = tmp_path_factory.mktemp("fz") / "tiny.h5"
    with contextlib.redirect_stdout(_io.StringIO()):
        assert main(["simulate", "--slices", "1", "--size", "48", "--coils", "2", "--out", str(path)]) == 0
    return path


def _run_cli(argv):
    from bayesmri.cli import main

    out, err = _io.StringIO(), _io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("default")
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse: usage error (2) or --help (0)
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


def _check_outcome(rc, err, command):
    assert rc in (0, 1, 2), (rc, err)
    # progress bars are output, not error lines
    lines = [ln for ln in err.replace("\r", "\n").splitlines()
             if ln.strip() and ": warning: " not in ln and not re.search(r"\d+/\d+ \[", ln)]
    if rc == 1:
        assert len(lines) == 1, err
        assert lines[0].startswith(f"bayesmri {command}: error: "), err  # never "internal error"
    elif rc == 2:
        assert "Traceback" not in err and ("usage:" in err or err == ""), err
    assert "Traceback" not in err


ints = st.sampled_from(["0", "1", "2", "-1", "3", "10000", str(2**70), "x", "", "1.5", "nan"])
floats = st.sampled_from(["4", "1", "0.5", "-inf", "inf", "nan", "1e309", "abc", "8", "2.5"])


@st.composite
def recon_argv(draw, tiny, tmp):
    inp = draw(st.sampled_from([str(tiny), str(tiny), str(tmp / "missing.h5"), str(tmp), str(tmp / "notes.txt")]))
    argv = ["recon", inp]
    opts = {
        "--method": st.sampled_from(["zf", "sense", "ZF", "", "nosuch", "pula"]),
        "--samples": ints, "--seed": ints, "--keep-samples": ints, "--threads": ints,
        "--device": st.sampled_from(["cpu", "cuda", "cuda:7", "tpu", "", "cpu:0"]),
        "--array-format": st.sampled_from(["npz", "h5", "nii"]),
        "--out": st.sampled_from([str(tmp / "o"), str(tmp / "notes.txt" / "o"), str(tmp / "notes.txt")]),
    }
    for name in draw(st.lists(st.sampled_from(sorted(opts)), unique=True, max_size=5)):
        argv += [name, draw(opts[name])]
    if draw(st.booleans()):
        argv.append("--no-progress")
    if "--method" in argv and argv[argv.index("--method") + 1] == "pula":
        # a valid pULA run would sample for seconds: keep only its invalid option values
        argv += ["--samples", "0"]
    return argv


@FUZZ
@given(data=st.data())
def test_recon_options_give_a_result_or_one_line(data, tiny, tmp_path):
    (tmp_path / "notes.txt").write_text("not hdf5")
    argv = data.draw(recon_argv(tiny, tmp_path))
    rc, out, err = _run_cli(argv)
    _check_outcome(rc, err, "recon")
    if rc == 0:
        o = Path(argv[argv.index("--out") + 1]) if "--out" in argv else tiny.with_name(
            f"{tiny.stem}_{argv[argv.index('--method') + 1] if '--method' in argv else 'zf'}")
        assert o.is_dir() and any(o.glob("*_mean.nii.gz")), (argv, out)


@st.composite
def simulate_argv(draw, tmp):
    argv = ["simulate"]
    opts = {
        "--split": st.sampled_from(["test", "val", "nope", ""]),
        "--slices": st.sampled_from(["1", "0", "-1", "100000", "x"]),
        "--pattern": st.sampled_from(["gro", "poisson", "uniform1d", "zigzag", ""]),
        "--acceleration": floats, "--snr": floats,
        "--coils": st.sampled_from(["1", "2", "0", "-3", "100000", "q"]),
        "--seed": ints,
        "--size": st.sampled_from(["16", "24", "0", "-5", "100000", "1e3", str(2**70)]),
        "--out": st.sampled_from([str(tmp / "s.h5"), str(tmp / "s.txt"), str(tmp), str(tmp / "notes.txt" / "s.h5")]),
    }
    for name in draw(st.lists(st.sampled_from(sorted(opts)), unique=True, max_size=6)):
        argv += [name, draw(opts[name])]
    if "--out" not in argv:
        argv += ["--out", str(tmp / "s.h5")]
    if "--size" not in argv:
        argv += ["--size", "16"]  # the default 128 is valid but slow
    if "--slices" not in argv:
        argv += ["--slices", "1"]
    return argv


@FUZZ
@given(data=st.data())
def test_simulate_options_give_a_result_or_one_line(data, tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    argv = data.draw(simulate_argv(tmp_path))
    rc, out, err = _run_cli(argv)
    _check_outcome(rc, err, "simulate")
    if rc == 0:
        assert Path(argv[argv.index("--out") + 1]).is_file()


# ---------------------------------------------------------------------------------------------- BART cfl
@st.composite
def cfl_pair(draw):
    dims_line = draw(st.one_of(
        st.lists(st.integers(0, 5), min_size=1, max_size=5).map(lambda d: " ".join(map(str, d))),
        st.sampled_from(["", "abc", "-3 4", "2.5 3", "1e3", "4 4 99999999999999999999", "3\x00 4", "١ ٢"]),
        st.text(max_size=20),
    ))
    header = draw(st.sampled_from(["# Dimensions\n{}\n", "{}\n", "# only a comment\n", "{}"])).format(dims_line)
    n_values = draw(st.integers(0, 40))
    return header, n_values, draw(st.booleans())


@FUZZ
@given(spec=cfl_pair())
def test_cfl_reader_gives_the_array_or_a_clean_error(spec, tmp_path):
    from bayesmri.bart import readcfl

    header, n_values, odd_bytes = spec
    base = tmp_path / f"c{next(_count)}"
    Path(str(base) + ".hdr").write_text(header)
    data = (np.arange(n_values) + 1j).astype(np.complex64).tobytes() + (b"x" if odd_bytes else b"")
    Path(str(base) + ".cfl").write_bytes(data)
    try:
        a = readcfl(base)
    except Exception as exc:  # noqa: BLE001
        _clean(exc, base)
        return
    assert a.dtype == np.complex64 and a.size == n_values and not odd_bytes


# ---------------------------------------------------------------------------------------------- training log
@FUZZ
@given(lines=st.lists(st.one_of(
    st.integers(-3, 30).map(lambda i: f"{i},0.5,1e-4,1.0,0.1"),  # complete rows, any order, repeats
    st.sampled_from(["1", "12,0.5", "x,0.5,1e-4,1.0,0.1", "", "7,0.5,1e-4,1.0,0.1,extra", "3.5,0.5,1e-4,1.0,0.1"]),
), max_size=40), max_step=st.integers(0, 25))
def test_training_log_rows_kept_on_resume_are_complete_increasing_and_bounded(lines, max_step, tmp_path):
    import csv

    from bayesmri.train.trainer import _valid_rows

    log = tmp_path / f"log{next(_count)}.csv"
    log.write_text("step,loss,lr,grad_norm,time_s\n" + "\n".join(lines))
    with open(log, newline="") as f:
        r = csv.DictReader(f)
        kept = _valid_rows(r, r.fieldnames, max_step)
    steps = [int(row["step"]) for row in kept]
    assert steps == sorted(set(steps)) and all(1 <= s <= max_step for s in steps)
    assert all(None not in row and None not in row.values() for row in kept)
    # nothing complete and in order is dropped: the first complete row of each new step is kept
    expected, last = [], 0
    for ln in lines:
        parts = ln.split(",")
        if len(parts) == 5 and parts[0].lstrip("-").isdigit() and last < int(parts[0]) <= max_step:
            expected.append(int(parts[0]))
            last = int(parts[0])
    assert steps == expected
