"""Dataset reconstruction (issue 21 items 3-5): ``bayesmri recon DIR --out OUT``, ``torchrun``, ``evaluate``.

Subprocess tests run the command line as a user would (``python -m bayesmri.cli``, and
``python -m torch.distributed.run`` for several processes on gloo).
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from bayesmri import cli
from bayesmri.dataset_recon import find_inputs, read_record, shard

ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
NAMES = ["vol0.h5", "vol1.h5", "vol2.h5"]


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "bayesmri.cli", *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=timeout)


def torchrun(n, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(n),
                           "--standalone", "-m", "bayesmri.cli", *map(str, args)],
                          capture_output=True, text=True, env=ENV, timeout=timeout)


def arrays(path):
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in f}


def manifest(out):
    return json.loads((Path(out) / "manifest.json").read_text())


def leftovers(folder):
    return [p.name for p in Path(folder).iterdir() if ".tmp" in p.name]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Three fastMRI-layout files, 64 x 64, 4 coils, 2 slices each (different noise and masks)."""
    d = tmp_path_factory.mktemp("ds") / "data"
    d.mkdir()
    for i, name in enumerate(NAMES):
        assert cli.main(["simulate", "--slices", "2", "--size", "64", "--coils", "4", "--seed", str(i),
                         "--out", str(d / name)]) == 0
    return d


@pytest.fixture(scope="module")
def tv_run(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("tv") / "out"
    assert cli.main(["recon", str(dataset), "--method", "tv", "--out", str(out), "--no-progress"]) == 0
    return out


def test_outputs_are_fastmri_submissions_and_match_single_file_recon(dataset, tv_run, tmp_path):
    assert sorted(p.name for p in tv_run.glob("*.h5")) == NAMES
    m = manifest(tv_run)
    assert m["method"] == "tv" and m["summary"]["done"] == 3 and m["summary"]["n_inputs"] == 3
    for name in NAMES:
        a = arrays(tv_run / name)
        assert a["reconstruction"].dtype == np.float32 and a["reconstruction"].shape == (2, 64, 64)
        np.testing.assert_allclose(a["reconstruction"], np.abs(a["mean"]), rtol=1e-6)
        rec = m["files"][name]
        assert rec["status"] == "done" and rec["n_slices"] == 2 and rec["metrics"]["psnr"] > 20
        assert read_record(tv_run / name)["options"] == m["options"]
    # the same file through the one-file form: outputs there are in normalised units, here in the input's
    single = tmp_path / "single"
    assert cli.main(["recon", str(dataset / "vol1.h5"), "--method", "tv", "--out", str(single), "--no-progress"]) == 0
    ref = np.load(single / "tv.npz")["mean"]
    a = arrays(tv_run / "vol1.h5")
    np.testing.assert_allclose(a["mean"] / a["scale"][:, None, None], ref, rtol=0, atol=1e-6 * np.abs(ref).max())


def test_rerun_skips_finished_files(dataset, tv_run):
    before = {n: (tv_run / n).stat().st_mtime_ns for n in NAMES}
    r = run_cli("recon", dataset, "--method", "tv", "--out", tv_run, "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "3 of 3 file(s) already finished" in r.stdout
    assert {n: (tv_run / n).stat().st_mtime_ns for n in NAMES} == before
    run = manifest(tv_run)["runs"][-1]
    assert run["skipped"] == 3 and run["pending"] == 0 and run["status"] == "done"


def test_other_options_into_same_out_are_refused(dataset, tv_run):
    r = run_cli("recon", dataset, "--method", "tv", "--seed", "3", "--out", tv_run)
    assert r.returncode == 1
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "other options" in lines[0] and "seed" in lines[0], r.stderr


def test_out_must_not_be_the_input_folder_or_hold_foreign_files(dataset, tmp_path):
    r = run_cli("recon", dataset, "--method", "zf", "--out", dataset)
    assert r.returncode == 1 and "would replace the inputs" in r.stderr, r.stderr
    out = tmp_path / "out"
    out.mkdir()
    with h5py.File(out / "vol0.h5", "w") as f:
        f["x"] = np.zeros(3)
    r = run_cli("recon", dataset, "--method", "zf", "--out", out)
    assert r.returncode == 1 and "not written by" in r.stderr, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["vol0.h5"]  # nothing else written


def test_evaluate_follows_fastmri_definitions(dataset, tv_run, tmp_path):
    skm = pytest.importorskip("skimage.metrics")
    js = tmp_path / "ev.json"
    r = run_cli("evaluate", tv_run, "--reference", dataset, "--json", js)
    assert r.returncode == 0, r.stderr
    assert "PSNR" in r.stdout and "vol2.h5" in r.stdout
    ev = json.loads(js.read_text())
    m = manifest(tv_run)
    for row in ev["volumes"]:
        with h5py.File(dataset / row["file"]) as f:
            gt = f["reconstruction_rss"][()]
        pred = arrays(tv_run / row["file"])["reconstruction"]
        # fastMRI's evaluate.py: volume PSNR/NMSE, slice SSIM with the volume's max, averaged
        assert row["psnr"] == pytest.approx(skm.peak_signal_noise_ratio(gt, pred, data_range=gt.max()), abs=1e-4)
        assert row["nmse"] == pytest.approx(np.linalg.norm(gt - pred) ** 2 / np.linalg.norm(gt) ** 2, rel=1e-5)
        ssim = np.mean([skm.structural_similarity(g, p, data_range=gt.max()) for g, p in zip(gt, pred)])
        assert row["ssim"] == pytest.approx(ssim, abs=1e-5)
        # the manifest scores each file with the same definitions
        for k in ("psnr", "ssim", "nmse"):
            assert m["files"][row["file"]]["metrics"][k] == pytest.approx(row[k], rel=1e-4)
    psnrs = [v["psnr"] for v in ev["volumes"]]
    assert ev["mean"]["psnr"] == pytest.approx(np.mean(psnrs)) and ev["std"]["psnr"] == pytest.approx(np.std(psnrs, ddof=1))


def test_torchrun_two_processes_give_the_outputs_of_one(dataset, tmp_path):
    args = ["recon", dataset, "--method", "pula", "--samples", "2", "--slices", "0", "--no-progress",
            "--opt", "n_levels=20"]  # plumbing, not quality: a quarter of the validated levels
    one = tmp_path / "one"
    two = tmp_path / "two"
    r1 = run_cli(*args, "--out", one)
    assert r1.returncode == 0, r1.stderr
    r2 = torchrun(2, *args, "--out", two)
    assert r2.returncode == 0, r2.stdout + r2.stderr
    for name in NAMES:
        a, b = arrays(one / name), arrays(two / name)
        assert set(a) == set(b) >= {"reconstruction", "mean", "std", "samples"}
        for k in a:
            if k != "wall_time_s":
                np.testing.assert_array_equal(a[k], b[k], err_msg=f"{name}:{k}")
    m = manifest(two)
    procs = m["runs"][-1]["processes"]
    assert [p["rank"] for p in procs] == [0, 1] and all(p["done"] for p in procs)
    assert sorted(f for p in procs for f in p["done"]) == NAMES
    assert {m["files"][n]["rank"] for n in NAMES} == {0, 1} and m["runs"][-1]["world_size"] == 2
    assert m["summary"]["mean"]["psnr"] == pytest.approx(manifest(one)["summary"]["mean"]["psnr"], abs=1e-9)


@pytest.mark.parametrize("sig,method", [(signal.SIGTERM, "pula"), (signal.SIGKILL, "pula")], ids=["SIGTERM", "SIGKILL"])
def test_killed_run_restarts_without_redoing_finished_files(dataset, tmp_path, sig, method):
    # SIGTERM: the process stops cleanly; SIGKILL: it leaves the temporary of the file in progress
    out = tmp_path / "out"
    args = ["recon", str(dataset), "--method", method, "--out", str(out), "--no-progress"]
    # a sampler (it catches Ctrl-C itself), slow enough (seconds per file) for the signal to land in file 2
    args += ["--samples", "2", "--slices", "0", "--opt", "n_levels=20"]
    n_slices = 1
    p = subprocess.Popen([sys.executable, "-m", "bayesmri.cli", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=ENV, text=True)
    for line in p.stdout:  # one line per finished file: stop the run during the next one
        if line.startswith("[1/3]"):
            p.send_signal(sig)
            break
    p.communicate(timeout=120)
    assert p.returncode == (143 if sig == signal.SIGTERM else -9)
    finished = sorted(x.name for x in out.glob("*.h5"))
    assert "vol0.h5" in finished and len(finished) < 3
    for name in finished:  # every output present is complete
        assert read_record(out / name)["status"] == "done"
        assert arrays(out / name)["reconstruction"].shape == (n_slices, 64, 64)
    if sig == signal.SIGTERM:
        assert leftovers(out.parent) == [] and leftovers(out) == []
    before = {n: (out / n).stat().st_mtime_ns for n in finished}
    time.sleep(0.01)
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    assert sorted(x.name for x in out.glob("*.h5")) == NAMES
    assert {n: (out / n).stat().st_mtime_ns for n in finished} == before  # not redone
    assert leftovers(out) == []  # a SIGKILLed file's temporary is cleaned up
    m = manifest(out)
    assert m["runs"][0]["status"] == "interrupted" and m["runs"][-1]["status"] == "done"
    assert m["runs"][-1]["skipped"] == len(finished) and m["runs"][-1]["processes"][0]["done"] == [
        n for n in NAMES if n not in finished]
    assert all(m["files"][n]["status"] == "done" for n in NAMES)


def test_a_bad_file_is_recorded_and_retried(dataset, tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    for name in NAMES[:2]:
        (d / name).write_bytes((dataset / name).read_bytes())
    (d / "broken.h5").write_bytes(b"not an hdf5 file")
    out = tmp_path / "out"
    r = run_cli("recon", d, "--method", "zf", "--out", out, "--no-progress")
    assert r.returncode == 1
    assert "broken.h5 failed" in r.stderr and "neither HDF5" in r.stderr
    m = manifest(out)
    assert m["files"]["broken.h5"]["status"] == "failed" and m["summary"]["done"] == 2
    assert sorted(p.name for p in out.glob("*.h5")) == NAMES[:2]
    (d / "broken.h5").write_bytes((dataset / NAMES[2]).read_bytes())  # fixed: the rerun does only it
    r = run_cli("recon", d, "--method", "zf", "--out", out, "--no-progress")
    assert r.returncode == 0, r.stderr
    m = manifest(out)
    assert m["runs"][-1]["skipped"] == 2 and m["files"]["broken.h5"]["status"] == "done"


def test_inputs_and_shards(dataset, tmp_path):
    assert [p.name for p in find_inputs(dataset)] == NAMES
    assert [p.name for p in find_inputs(str(dataset / "vol[12].h5"))] == NAMES[1:]
    assert [p.name for p in find_inputs([dataset / "vol2.h5", dataset / "vol0.h5"])] == ["vol0.h5", "vol2.h5"]
    with pytest.raises(ValueError, match="no file matches"):
        find_inputs(str(dataset / "*.mrd"))
    other = tmp_path / "x"
    other.mkdir()
    (other / "vol0.h5").write_bytes(b"")
    with pytest.raises(ValueError, match="both write vol0.h5"):
        find_inputs([dataset / "vol0.h5", other / "vol0.h5"])
    # largest first to the least-loaded process; deterministic; every file exactly once
    files = [f"f{i}" for i in range(7)]
    sizes = [5, 1, 9, 3, 3, 7, 2]
    parts = shard(files, 3, sizes)
    assert parts == shard(files, 3, sizes)
    assert sorted(f for p in parts for f in p) == files
    loads = [sum(sizes[files.index(f)] for f in p) for p in parts]
    assert max(loads) - min(loads) <= max(sizes) and parts[0][0] == "f2"
    assert shard(files, 1, sizes) == [sorted(files, key=lambda f: -sizes[files.index(f)])]
