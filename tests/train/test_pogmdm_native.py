"""``bayesmri train pogmdm --data native``: synthesised crops in the joint sampler's units, resumable training."""
import pytest
import torch

pytest.importorskip("nilearn")


@pytest.fixture(scope="module")
def synth():
    from bayesmri.data.synth import BrainSliceSynthesizer

    try:
        return BrainSliceSynthesizer("train", crop=32, pixel_mm=(0.6, 2.0))
    except (OSError, FileNotFoundError) as exc:  # pragma: no cover - volumes not installed
        pytest.skip(f"MNI volumes unavailable: {exc}")


def test_native_crops_are_scaled_to_the_995th_percentile_of_whole_slices(synth):
    from bayesmri.train.pogmdm import NativeCrops

    nc = NativeCrops.from_synth(synth, n=8)
    # the synthesiser puts the 95th percentile at ~1, so the 99.5th of whole slices lies above it
    assert 1.0 < nc.scale < 3.0
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    b = nc(4, g1)
    assert b.shape == (4, 32, 32) and b.dtype == torch.float32
    torch.testing.assert_close(b * nc.scale, synth(4, g2)[:, 0])  # the same draws, divided by one constant
    with pytest.raises(ValueError, match="scale"):
        NativeCrops(synth, 0.0)


def test_cli_native_training_resumes_exactly(tmp_path, monkeypatch):
    from bayesmri.cli import main

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    common = ["train", "pogmdm", "--data", "native", "--crop", "32", "--pixel-mm", "0.8,1.5", "--batch-size", "2",
              "--lr", "1e-3", "--warmup", "0", "--grad-clip", "0", "--checkpoint-every", "2", "--no-progress"]
    assert main(common + ["--out", str(tmp_path / "a"), "--steps", "4"]) == 0
    assert main(common + ["--out", str(tmp_path / "b"), "--steps", "2"]) == 0
    assert main(common + ["--out", str(tmp_path / "b"), "--steps", "4", "--resume"]) == 0
    from safetensors.torch import load_file

    a, b = load_file(str(tmp_path / "a" / "model_ema.safetensors")), load_file(str(tmp_path / "b" / "model_ema.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    import json

    meta = json.loads((tmp_path / "a" / "model_ema.json").read_text())
    assert meta["prior"]["data"] == "native" and meta["prior"]["training_crop"] == [32, 32]
    assert meta["prior"]["pixel_mm"] == [0.8, 1.5] and meta["prior"]["intensity_scale"] > 1


def test_bad_pixel_range_is_rejected():
    from bayesmri.train.pogmdm import _parse_range

    assert _parse_range("0.6,2.0") == (0.6, 2.0)
    with pytest.raises(ValueError, match="pixel-mm"):
        _parse_range("0.6")
