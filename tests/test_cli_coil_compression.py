"""`bayesmri recon --virtual-coils N`: SVD coil compression before the coil maps, recorded in metrics.json."""
import contextlib

import pytest

from bayesmri import io
from bayesmri.cli import main


def _run(argv, capsys):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def sim12(tmp_path_factory):
    path = tmp_path_factory.mktemp("sim") / "sim12.h5"
    rc = main(["simulate", "--split", "test", "--slices", "1", "--pattern", "gro", "--acceleration", "4",
               "--coils", "12", "--snr", "30", "--seed", "1", "--size", "64", "--out", str(path)])
    assert rc == 0
    return path


def test_recon_virtual_coils_runs_and_records_the_setting(sim12, tmp_path, capsys):
    rows = {}
    for vc in (None, "6", "0.99"):
        out = tmp_path / f"o{vc}"
        extra = [] if vc is None else ["--virtual-coils", vc]
        rc, stdout, err = _run(["recon", "--method", "sense", sim12, "--out", out, "--no-progress", *extra], capsys)
        assert rc == 0, err
        row = next(iter(io.load_json(out / "metrics.json")["sense"].values()))
        rows[vc] = row
        st = row["settings"]
        if vc is None:
            assert st["virtual_coils"] is None and "coil_compression" not in st
            assert "coil compression" not in stdout
            continue
        cc = st["coil_compression"]
        assert st["virtual_coils"] == float(vc) and cc["method"] == "svd" and cc["coils"] == 12
        assert cc["calib"] == "all sampled points" and len(cc["energy_kept"]) == 1
        assert "coil compression: SVD, 12 -> " in stdout
        if vc == "6":
            assert cc["virtual_coils"] == [6] and cc["energy_kept"][0] >= 0.99
        else:
            assert 1 <= cc["virtual_coils"][0] < 12 and cc["energy_kept"][0] >= 0.99
    # near-lossless on smooth birdcage coils: the scores barely move
    assert abs(rows["6"]["psnr"] - rows[None]["psnr"]) < 0.5, rows


@pytest.mark.parametrize("value,where", [("0", "usage"), ("1.5", "usage"), ("abc", "usage"), ("13", "12 coils")])
def test_recon_bad_virtual_coils_fails_cleanly(value, where, sim12, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) if where == "usage" else contextlib.nullcontext():
        rc, _, err = _run(["recon", "--method", "tv", sim12, "--out", out, "--virtual-coils", value], capsys)
    if where == "usage":  # argparse: exit 2 with the usage line
        err = capsys.readouterr().err
        assert "--virtual-coils" in err
    else:
        assert rc != 0
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        assert len(lines) == 1 and "--virtual-coils" in lines[0] and where in lines[0], err
    assert not out.exists()

