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


def test_out_with_a_file_suffix_is_refused_before_the_compute(data, tmp_path):
    d, four = data
    out = tmp_path / "pula.h5"
    r = cli("recon", four, "--method", "pula", "--samples", "4", "--out", out)
    one_line_error(r, "output folder", str(out), "'.h5'", str(tmp_path / "pula"))
    assert "recon pula" not in r.stderr and not out.exists()
    # a folder of that name made on purpose is taken
    from bayesmri import io

    out.mkdir()
    assert io.check_writable(out) == out
    assert io.check_writable(tmp_path / "run.v2") == tmp_path / "run.v2"  # an unknown suffix is a folder name


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


@pytest.mark.parametrize("where", ["recon_after", "top_before", "train_model_after"])
def test_debug_shows_the_traceback(data, tmp_path, where):
    d, four = data
    argv = {"recon_after": ["recon", four, "--threads", "10000", "--debug"],
            "top_before": ["--debug", "recon", four, "--threads", "10000"],
            "train_model_after": [*TRAIN, "--out", tmp_path / "t", "--seed", "-1", "--debug"]}[where]
    r = cli(*argv)
    assert r.returncode != 0 and "Traceback" in r.stderr and "ValueError" in r.stderr


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


# ---------------------------------------------------------------------------------------------- bad files
def _variant(src: Path, dst: Path, edit) -> Path:
    import shutil

    import h5py

    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        edit(f)
    return dst


def _psnr(out: Path, method: str) -> float:
    return next(iter(json.loads((out / "metrics.json").read_text())[method].values()))["psnr"]


@pytest.fixture(scope="module")
def sense_psnr(data):
    d, four = data
    out = d / "sense_ref"
    r = cli("recon", four, "--method", "sense", "--out", out, "--no-progress")
    assert r.returncode == 0, r.stderr
    return _psnr(out, "sense")


def test_reference_with_fewer_slices_than_kspace_is_one_line(data, tmp_path):
    d, four = data

    def edit(f):
        ref = f["reconstruction_rss"][()]
        del f["reconstruction_rss"]
        f["reconstruction_rss"] = ref[:2]

    bad = _variant(four, tmp_path / "fewer.h5", edit)
    one_line_error(cli("recon", bad, "--out", tmp_path / "o"), str(bad), "reconstruction_rss", "2 slice", "4")
    assert not (tmp_path / "o").exists()


def test_huge_declared_size_is_refused_before_allocating(data, tmp_path):
    d, four = data

    def edit(f):
        del f["kspace"]  # a few-kB file declaring 1.2 TB of k-space (HDF5 fills unwritten chunks)
        f.create_dataset("kspace", shape=(4, 8, 200000, 100000), dtype=np.complex64, chunks=(1, 1, 64, 64))

    bad = _variant(four, tmp_path / "huge.h5", edit)
    t0 = time.perf_counter()
    one_line_error(cli("recon", bad, "--out", tmp_path / "o"), str(bad), "200000", "GiB")
    assert time.perf_counter() - t0 < 60


@pytest.mark.parametrize("factor", [1e-25, 1e36])
def test_absurd_kspace_scale_gives_the_same_image(data, tmp_path, sense_psnr, factor):
    d, four = data

    def edit(f):
        f["kspace"][...] = f["kspace"][()] * np.float32(factor)
        f["reconstruction_rss"][...] = f["reconstruction_rss"][()] * np.float32(factor)

    scaled = _variant(four, tmp_path / "scaled.h5", edit)
    r = cli("recon", scaled, "--method", "sense", "--out", tmp_path / "o", "--no-progress")
    assert r.returncode == 0, r.stderr
    # was a blank image (float32 squares under/overflow in the normalisation); now scale-invariant
    assert abs(_psnr(tmp_path / "o", "sense") - sense_psnr) < 0.05
    mean = np.load(tmp_path / "o" / "sense.npz")["mean"]
    assert np.isfinite(mean).all() and np.abs(mean).max() > 0.1


def test_nan_in_reference_warns_and_keeps_the_reconstruction(data, tmp_path):
    d, four = data
    out = tmp_path / "o"
    r = cli("recon", four, "--method", "sense", "--out", out, "--no-progress")  # an earlier run's metrics
    assert r.returncode == 0 and "sense" in json.loads((out / "metrics.json").read_text())

    def edit(f):
        ref = f["reconstruction_rss"][()]
        ref[1, 5, 5] = np.nan
        f["reconstruction_rss"][...] = ref

    bad = _variant(four, tmp_path / "nanref.h5", edit)
    r = cli("recon", bad, "--method", "sense", "--out", out, "--no-progress")
    assert r.returncode == 0, r.stderr
    warn = [ln for ln in r.stderr.splitlines() if "warning" in ln]
    assert len(warn) == 1 and str(bad) in warn[0] and "NaN" in warn[0] and "slice 1" in warn[0]
    assert np.isfinite(np.load(out / "sense.npz")["mean"]).all()
    # the reconstruction is written; no score for it, and the earlier run's score (of other data) is gone
    assert not (out / "metrics.json").exists()


def test_inconsistent_mask_dataset_warns_and_uses_the_derived_mask(data, tmp_path, sense_psnr):
    d, four = data

    def edit(f):
        sampled = (f["kspace"][0] != 0).any(0).any(0)  # (W,) columns measured in slice 0
        f["mask"] = np.roll(sampled, 7)  # a 1-D mask of the right R, wrong columns

    bad = _variant(four, tmp_path / "mask.h5", edit)
    r = cli("recon", bad, "--method", "sense", "--out", tmp_path / "o", "--no-progress")
    assert r.returncode == 0, r.stderr
    warn = [ln for ln in r.stderr.splitlines() if "warning" in ln]
    assert len(warn) == 1, r.stderr
    assert str(bad) in warn[0] and "'mask'" in warn[0] and "derived mask R=4" in warn[0]
    # the data decided: same quality as the file without the bad mask (the file mask cost ~6 dB)
    assert abs(_psnr(tmp_path / "o", "sense") - sense_psnr) < 0.05


def test_nan_in_kspace_is_one_line(data, tmp_path):
    d, four = data

    def edit(f):
        k = f["kspace"][()]
        k[2, 1, 3, 3] = np.nan
        f["kspace"][...] = k

    bad = _variant(four, tmp_path / "nank.h5", edit)
    one_line_error(cli("recon", bad, "--out", tmp_path / "o"), str(bad), "slice 2", "NaN")


@pytest.mark.parametrize("cut", [0, 100, 4000])
def test_truncated_input_file_is_one_line(data, tmp_path, cut):
    d, four = data
    bad = tmp_path / "cut.h5"
    bad.write_bytes(four.read_bytes()[:cut] if cut else four.read_bytes()[: four.stat().st_size // 2])
    one_line_error(cli("recon", bad, "--out", tmp_path / "o"), str(bad))


# ---------------------------------------------------------------------------------------------- weights
def test_corrupt_weights_file_is_one_line_naming_it(data, tmp_path):
    from bayesmri.priors.loading import resolve_weights

    d, four = data
    st, js = resolve_weights("score_small64")
    (tmp_path / "w.json").write_bytes(js.read_bytes())
    (tmp_path / "w.safetensors").write_bytes(st.read_bytes()[:100000])  # truncated
    out = tmp_path / "o"
    one_line_error(cli("recon", four, "--method", "pula", "--weights", tmp_path / "w", "--out", out, "--no-progress"),
                   "w.safetensors", "truncated or corrupt")
    (tmp_path / "w.safetensors").write_bytes(st.read_bytes())
    (tmp_path / "w.json").write_text(js.read_text()[:80])  # torn config
    one_line_error(cli("recon", four, "--method", "pula", "--weights", tmp_path / "w", "--out", out, "--no-progress"),
                   "w.json", "JSON")
    assert not out.exists()


# ---------------------------------------------------------------------------------------------- training
TRAIN = ("train", "score", "--config", "small64", "--batch-size", "2", "--no-progress", "--device", "cpu")


def test_train_cuda_without_cuda_is_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    one_line_error(cli("train", "score", "--device", "cuda", "--steps", "2", "--out", tmp_path / "t"),
                   "cuda", "not available")


def test_truncated_checkpoint_and_other_config_on_resume_are_one_line(tmp_path):
    run = tmp_path / "t"
    r = cli(*TRAIN, "--steps", "2", "--out", run)
    assert r.returncode == 0, r.stderr
    one_line_error(cli("train", "score", "--config", "default128", "--batch-size", "2", "--no-progress",
                       "--device", "cpu", "--steps", "4", "--out", run, "--resume"),
                   str(run / "checkpoint.pt"), "another model", "base_channels")
    ck = run / "checkpoint.pt"
    ck.write_bytes(ck.read_bytes()[:50000])
    one_line_error(cli(*TRAIN, "--steps", "4", "--out", run, "--resume"), str(ck), "truncated or corrupt")


def test_kill_9_and_resume_leaves_a_consistent_log_and_no_temporaries(tmp_path):
    import csv

    run = tmp_path / "t"
    p = subprocess.Popen([sys.executable, "-m", "bayesmri.cli", *TRAIN, "--steps", "400", "--checkpoint-every", "3",
                          "--out", str(run)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    t0 = time.time()
    while time.time() - t0 < 120:  # until a checkpoint exists and a few more rows were logged
        log = run / "log.csv"
        if (run / "checkpoint.pt").exists() and log.exists() and log.read_text().count("\n") >= 8:
            break
        time.sleep(0.1)
    p.kill()
    p.wait()
    import torch

    ck_step = torch.load(run / "checkpoint.pt", weights_only=True)["step"]
    # what a kill -9 can also leave: a torn last row and a temporary checkpoint of the dead process
    with open(run / "log.csv", "a") as f:
        f.write("1")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    tmp = run / f".checkpoint.pt.{dead.pid}-abc123.tmp.pt"
    tmp.write_bytes(b"partial")
    final = ck_step + 2
    r = cli(*TRAIN, "--steps", final, "--checkpoint-every", "3", "--out", run, "--resume")
    assert r.returncode == 0, r.stderr[-2000:]
    with open(run / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(row["step"]) for row in rows] == list(range(1, final + 1))
    assert all(None not in row.values() for row in rows)
    assert not tmp.exists()
    assert [p.name for p in run.iterdir() if ".tmp" in p.name] == []


# ---------------------------------------------------------------------------------------------- memory
def test_chunked_chains_are_pooled_and_only_kept_samples_are_held(data, tmp_path):
    d, four = data
    one = tmp_path / "one.h5"  # slice 0 only: pULA's cost is per slice and chain
    r = cli("simulate", "--slices", "1", "--size", "64", "--coils", "4", "--out", one)
    assert r.returncode == 0, r.stderr
    runs = {}
    for name, extra in (("all", []), ("chunked", ["--chunk", "2", "--keep-samples", "1"])):
        out = tmp_path / name
        r = cli("recon", one, "--method", "pula", "--samples", "3", "--out", out, "--no-progress", "--opt", "n_levels=20",
                *extra)
        assert r.returncode == 0, r.stderr
        runs[name] = (np.load(out / "pula.npz"), json.loads((out / "metrics.json").read_text()))
    (a, ma), (b, mb) = runs["all"], runs["chunked"]
    assert a["samples"].shape[0] == 3 and b["samples"].shape[0] == 1  # --keep-samples 1: one held per slice
    assert next(iter(mb["pula"].values()))["n_samples"] == 3  # but all three chains (2 + 1) were drawn
    assert (tmp_path / "chunked" / "pula_std.nii.gz").exists()
    # the pooled std is the 3-chain std (not one chunk's): same size as the unchunked run's
    ratio = np.abs(b["std"]).mean() / np.abs(a["std"]).mean()
    assert 0.75 < ratio < 1.33, ratio
    assert abs(next(iter(ma["pula"].values()))["psnr"] - next(iter(mb["pula"].values()))["psnr"]) < 1.0


def test_memory_estimate_warns_with_a_chunk_that_fits(monkeypatch):
    from bayesmri.methods import memory

    monkeypatch.setattr(memory, "available_memory", lambda: 1 << 30)
    with pytest.warns(UserWarning, match=r"64 chains at once need about 21\.\d GiB .* use --chunk 3"):
        memory.check_chain_memory(64, None, 16, 320, 320)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        memory.check_chain_memory(64, 3, 16, 320, 320)  # 3 chains (0.99 GiB) fit in 1 GiB: silent


def test_chains_beyond_twice_the_memory_fail_before_the_compute(data, tmp_path):
    d, four = data
    t0 = time.perf_counter()
    # 10^6 pULA chains at 64x64 with 4 coils: ~3.3 TB by the estimate
    r = cli("recon", four, "--method", "pula", "--samples", "1000000", "--out", tmp_path / "o")
    one_line_error(r, "1000000 chains at once", "--chunk")
    assert "recon pula" not in r.stderr and time.perf_counter() - t0 < 60


def test_sigterm_during_training_checkpoints_and_exits_143(tmp_path):
    run = tmp_path / "t"
    p = subprocess.Popen([sys.executable, "-m", "bayesmri.cli", *TRAIN, "--steps", "400", "--out", str(run)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    t0 = time.time()
    while time.time() - t0 < 120 and not (run / "log.csv").exists():  # training has started
        time.sleep(0.1)
    p.send_signal(signal.SIGTERM)
    err = p.communicate(timeout=120)[1].decode()
    assert p.returncode == 143, err[-1500:]
    assert "training interrupted at step" in err.strip().splitlines()[-1]
    import torch

    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] >= 1


def test_partial_on_request_writes_finished_slices_marked_partial(data, tmp_path):
    d, four = data
    out = tmp_path / "out"
    r = cli("recon", four, "--method", "zf", "--out", out, "--no-progress")
    assert r.returncode == 0, r.stderr
    zf_before = snapshot(out)
    p = subprocess.Popen([sys.executable, "-m", "bayesmri.cli", "recon", str(four), "--method", "pula",
                          "--samples", "2", "--out", str(out), "--partial", "--opt", "n_levels=20"],
                         stderr=subprocess.PIPE, env=ENV)
    buf = b""
    while True:  # slice 0 done ("1/4" on the recon bar), slice 1's sampler running ("sigma=" after it)
        c = p.stderr.read1(4096)
        if not c:
            break
        buf += c
        i = buf.find(b"1/4")
        if i >= 0 and b"sigma=" in buf[i:]:
            p.send_signal(signal.SIGINT)
            break
    buf += p.stderr.read()
    assert p.wait(timeout=120) == 130, buf.decode()[-1500:]
    last = buf.decode().replace("\r", "\n").strip().splitlines()[-1]
    assert "the first 1 of 4 slices written" in last and "pula.partial" in last, last
    met = json.loads((out / "metrics.json").read_text())
    row = next(iter(met["pula.partial"].values()))
    assert row["partial"] is True and row["n_slices"] == 1 and row["n_slices_total"] == 4
    assert np.load(out / "pula.partial.npz")["mean"].shape[0] == 1
    assert "pula" not in met and not (out / "pula.npz").exists()  # nothing under the complete name
    assert {k: v for k, v in snapshot(out).items() if k.startswith("zf")} == {
        k: v for k, v in zf_before.items() if k.startswith("zf")}
    # a complete run of the method retires its partial result
    r = cli("recon", four, "--method", "pula", "--out", out, "--no-progress", "--opt", "n_levels=20")
    assert r.returncode == 0, r.stderr
    met = json.loads((out / "metrics.json").read_text())
    assert "pula.partial" not in met and "pula" in met and "zf" in met
    assert not any(p.name.startswith("pula.partial") for p in out.iterdir())


@pytest.mark.parametrize("opt,needle", [(["--grad-clip", "nan"], "--grad-clip"), (["--seed", "-5"], "--seed"),
                                        (["--seed", str(10**23)], "--seed"), (["--lr", "inf"], "lr")])
def test_train_options_are_checked_before_training(tmp_path, opt, needle):
    one_line_error(cli(*TRAIN, "--steps", "3", "--out", tmp_path / "t", *opt), needle)
    assert not (tmp_path / "t" / "checkpoint.pt").exists()


def test_train_unwritable_out_fails_before_training(tmp_path):
    (tmp_path / "f").write_text("")
    one_line_error(cli(*TRAIN, "--steps", "3", "--out", tmp_path / "f" / "run"), "is a file, not a folder")


def test_single_coil_file_is_reconstructed(data, tmp_path):
    import h5py

    from bayesmri.data.fastmri import write_fastmri_h5

    d, four = data
    with h5py.File(four) as f:
        k = f["kspace"][()][:, 0]  # (S, H, W): fastMRI's single-coil layout, reconstruction_esc
    single = tmp_path / "single.h5"
    write_fastmri_h5(single, k)
    r = cli("recon", single, "--method", "sense", "--out", tmp_path / "o", "--no-progress")
    assert r.returncode == 0, r.stderr  # was "ESPIRiT needs at least 2 coils" (a 1-coil map is 1)
    mean = np.load(tmp_path / "o" / "sense.npz")["mean"]
    assert mean.shape == k.shape and np.isfinite(mean).all() and np.abs(mean).max() > 0


def test_data_problem_found_by_the_method_names_the_file(tmp_path):
    from bayesmri.data.fastmri import write_fastmri_h5

    rng = np.random.default_rng(0)
    k = (rng.standard_normal((1, 4, 32, 32)) + 1j * rng.standard_normal((1, 4, 32, 32))).astype(np.complex64)
    k[..., ::2] = 0  # every other column, the centre (column 16) among the missing ones
    bad = tmp_path / "nocentre.h5"
    write_fastmri_h5(bad, k)
    one_line_error(cli("recon", bad, "--out", tmp_path / "o", "--no-progress"), str(bad), "centre")
    assert not (tmp_path / "o").exists()
