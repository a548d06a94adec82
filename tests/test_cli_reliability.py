"""Reliability of the command line through real subprocesses (issue 22).

Each test runs ``python -m bayesmri.cli`` as a user would and checks a property of the outcome: exit
status, the files left in the output folder, and that an error is one line naming the problem.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def cli(*args, cwd=None, timeout=240):
    """Run ``bayesmri ARGS``; return the CompletedProcess (text)."""
    return subprocess.run([sys.executable, "-m", "bayesmri.cli", *map(str, args)], capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=timeout)


def one_line_error(proc, *needles):
    """The run failed with exit 1 and exactly one stderr line that mentions every needle."""
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert str(n) in lines[0], (n, lines[0])
    return lines[0]


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("rel")
    four = d / "four.h5"
    r = cli("simulate", "--slices", "4", "--size", "64", "--coils", "4", "--out", four)
    assert r.returncode == 0, r.stderr
    return d, four


def _leftovers(folder: Path):
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp") or ".tmp." in p.name]


# ---------------------------------------------------------------------------------------------- interrupt
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_signal_mid_sampling_exits_nonzero_and_keeps_earlier_result(data, tmp_path, sig, code):
    d, four = data
    out = tmp_path / "out"
    r = cli("recon", four, "--method", "zf", "--out", out, "--no-progress")
    assert r.returncode == 0, r.stderr
    before = snapshot(out)
    # pULA with 4 chains: ~1 s per slice here. The sampler's own progress bar ("sigma=" in its postfix)
    # shows that sampling has started; the signal then lands inside the sampler, which catches
    # KeyboardInterrupt and returns its chains: the command must still stop, write nothing and fail.
    p = subprocess.Popen([sys.executable, "-m", "bayesmri.cli", "recon", str(four), "--method", "pula",
                          "--samples", "4", "--out", str(out)], stderr=subprocess.PIPE, env=ENV)
    buf = b""
    t_sig = None
    while True:
        c = p.stderr.read1(4096) if hasattr(p.stderr, "read1") else p.stderr.read(1)
        if not c:
            break
        buf += c
        if b"sigma=" in buf:
            p.send_signal(sig)
            t_sig = time.perf_counter()
            break
    buf += p.stderr.read()
    rc = p.wait(timeout=120)
    elapsed = time.perf_counter() - t_sig
    err = buf.decode(errors="replace")
    assert t_sig is not None, err
    assert rc == code, err[-1500:]
    last = err.replace("\r", "\n").strip().splitlines()[-1]
    assert last.startswith("bayesmri recon: interrupted by " + sig.name), last
    assert "during slice 0 of pula" in last, last  # stopped through the sampler's caught interrupt
    assert "nothing written" in last
    # the remaining three slices were not run (each takes ~1 s with 4 chains)
    assert elapsed < 3.0, elapsed
    assert snapshot(out) == before  # zf's files and metrics untouched, no pula file
    assert _leftovers(tmp_path) == [] and _leftovers(out) == []


# ---------------------------------------------------------------------------------------------- outputs
def test_two_methods_into_one_out_keep_both_metrics_and_stale_files_go(data, tmp_path):
    d, four = data
    out = tmp_path / "out"
    for m in ("zf", "sense"):
        r = cli("recon", four, "--method", m, "--out", out, "--no-progress")
        assert r.returncode == 0, r.stderr
    met = json.loads((out / "metrics.json").read_text())
    assert set(met) == {"zf", "sense"}
    assert met["sense"]["gro-r4"]["psnr"] > met["zf"]["gro-r4"]["psnr"]
    # rerun zf as .h5: the earlier zf.npz is stale and goes in the same commit; sense untouched
    sense_before = {k: v for k, v in snapshot(out).items() if k.startswith("sense")}
    r = cli("recon", four, "--method", "zf", "--out", out, "--no-progress", "--array-format", "h5")
    assert r.returncode == 0, r.stderr
    names = set(os.listdir(out))
    assert "zf.h5" in names and "zf.npz" not in names
    assert {k: v for k, v in snapshot(out).items() if k.startswith("sense")} == sense_before
    assert set(json.loads((out / "metrics.json").read_text())) == {"zf", "sense"}


def test_concurrent_runs_into_one_out_lose_nothing(data, tmp_path):
    d, four = data
    out = tmp_path / "out"
    methods = ("zf", "sense", "tv")
    procs = [subprocess.Popen([sys.executable, "-m", "bayesmri.cli", "recon", str(four), "--method", m, "--out",
                               str(out), "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
             for m in methods]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err.decode()[-1500:]
    met = json.loads((out / "metrics.json").read_text())
    assert set(met) == set(methods)
    for m in methods:
        assert (out / f"{m}_mean.nii.gz").exists() and (out / f"{m}.npz").exists()
    assert _leftovers(tmp_path) == [] and _leftovers(out) == []


@pytest.mark.parametrize("bad", ["file_parent", "proc"])
def test_unwritable_out_fails_before_the_compute(data, tmp_path, bad):
    d, four = data
    if bad == "file_parent":
        (tmp_path / "afile").write_text("x")
        out = tmp_path / "afile" / "out"
    else:
        if not Path("/proc/self").exists():
            pytest.skip("no /proc")
        out = Path("/proc/bayesmri-test-out")
    t0 = time.perf_counter()
    # progress bars on: the recon bar is created right before the compute, so its absence shows that
    # the run failed before any sampling
    r = cli("recon", four, "--method", "pula", "--samples", "4", "--out", out)
    line = one_line_error(r, "cannot")
    assert str(out.parent) in line
    assert "recon pula" not in r.stderr
    assert time.perf_counter() - t0 < 30


def test_nothing_written_when_the_method_fails(data, tmp_path):
    d, four = data
    out = tmp_path / "out"
    r = cli("recon", four, "--method", "zf", "--out", out, "--no-progress")
    before = snapshot(out)
    r = cli("recon", four, "--method", "nosuchmethod", "--out", out)
    one_line_error(r, "nosuchmethod")
    assert snapshot(out) == before


def test_stale_staging_folder_of_a_killed_run_is_removed(data, tmp_path):
    d, four = data
    out = tmp_path / "out"
    # what SIGKILL leaves: a staging folder named for a process that no longer exists
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".out.{dead.pid}-abc123.tmp"
    stale.mkdir()
    (stale / "zf.npz").write_bytes(b"partial")
    live = tmp_path / f".out.{os.getpid()}-def456.tmp"  # a run still going on (this process): kept
    live.mkdir()
    r = cli("recon", four, "--method", "zf", "--out", out, "--no-progress")
    assert r.returncode == 0, r.stderr
    assert not stale.exists() and live.exists()


# ---------------------------------------------------------------------------------------------- errors
def test_threads_bounded_by_cores(data):
    d, four = data
    r = cli("recon", four, "--threads", "10000")
    one_line_error(r, "--threads", str(os.cpu_count()), "10000")


def test_debug_shows_the_traceback(data):
    d, four = data
    r = cli("recon", four, "--threads", "10000", "--debug")
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_simulate_rejects_non_finite_snr(tmp_path):
    for v in ("-inf", "nan", "inf"):
        r = cli("simulate", f"--snr={v}", "--out", tmp_path / "s.h5")
        one_line_error(r, "--snr")
        assert not (tmp_path / "s.h5").exists()


def _merge_worker(args):
    out, key, barrier_file = args
    from bayesmri import io

    while not Path(barrier_file).exists():  # start together: the merges must overlap
        time.sleep(0.001)
    with io.atomic_dir(out, merge_json=["metrics.json"]) as stage:
        io.save_json(stage / "metrics.json", {key: {"psnr": float(len(key))}})
        time.sleep(0.05)  # widen the window between the staged write and the commit
    return key


def test_concurrent_merges_of_metrics_json_lose_no_entry(tmp_path):
    import multiprocessing as mp

    out = tmp_path / "out"
    barrier = tmp_path / "go"
    keys = [f"m{i}" for i in range(12)]
    ctx = mp.get_context("fork")
    with ctx.Pool(6) as pool:
        res = pool.map_async(_merge_worker, [(out, k, barrier) for k in keys])
        time.sleep(0.3)
        barrier.write_text("")
        assert sorted(res.get(timeout=60)) == sorted(keys)
    assert set(json.loads((out / "metrics.json").read_text())) == set(keys)
    assert sorted(os.listdir(out)) == ["metrics.json"]  # no lock or temporary file among the outputs
