import csv
import os
import signal

import pytest
import torch

import bayesmri.train.trainer as trainer_mod
from bayesmri.priors.loading import load_model, read_config
from bayesmri.priors.score_unet import ScoreUNet
from bayesmri.train import Trainer, load_checkpoint
from bayesmri.train.score import ImageDataset, MRIAugment, ScoreMatchingLoss, smooth_random_images


def _model():
    torch.manual_seed(0)
    # dropout > 0 so that the global torch RNG matters for exact resume
    return ScoreUNet(base_channels=4, channel_mult=(1, 2), num_res_blocks=1, attention=True, embed_dim=8, dropout=0.2)


def _data():
    return ImageDataset(smooth_random_images(10, 16, seed=3))  # 10 items, batch 4: epochs end mid-run


def _loss():
    return ScoreMatchingLoss(sigma_max=5.0, augment=MRIAugment())


def _trainer(out, steps, **kw):
    kw.setdefault("resume", True)
    return Trainer(_model(), _loss(), _data(), out, steps=steps, batch_size=4, warmup_steps=3, checkpoint_every=2,
                   progress=False, lr=1e-3, **kw)


def _assert_same_state(a: Trainer, b: Trainer):
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    for k, v in a.ema.items():
        assert torch.equal(v, b.ema[k]), k
    sa, sb = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    for i in sa:
        for k in sa[i]:
            assert torch.equal(torch.as_tensor(sa[i][k]), torch.as_tensor(sb[i][k]))


def _log_steps(out):
    with open(os.path.join(out, "log.csv"), newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def test_exact_resume_is_bit_identical(tmp_path):
    straight = _trainer(tmp_path / "a", 7)
    straight.fit(export=False)

    first = _trainer(tmp_path / "b", 3)
    first.fit(export=False)
    resumed = _trainer(tmp_path / "b", 7)
    assert resumed.step == 3
    resumed.fit(export=False)
    _assert_same_state(straight, resumed)
    assert _log_steps(tmp_path / "b") == list(range(1, 8))
    # The loss logged per step is the same too (same noise, sigmas, augmentation, data order).
    with open(tmp_path / "a" / "log.csv") as fa, open(tmp_path / "b" / "log.csv") as fb:
        la = [r["loss"] for r in csv.DictReader(fa)]
        lb = [r["loss"] for r in csv.DictReader(fb)]
    assert la == lb


def test_resume_with_new_lr_uses_it(tmp_path):
    first = _trainer(tmp_path / "c", 4)
    first.fit(export=False)
    with pytest.warns(UserWarning, match="lr=0.0001"):
        t = Trainer(_model(), _loss(), _data(), tmp_path / "c", steps=6, batch_size=4, warmup_steps=3,
                    checkpoint_every=2, progress=False, lr=1e-4, resume=True)
    t.fit(export=False)
    with open(tmp_path / "c" / "log.csv", newline="") as f:
        lrs = {int(r["step"]): float(r["lr"]) for r in csv.DictReader(f)}
    assert lrs[4] == pytest.approx(1e-3) and lrs[5] == pytest.approx(1e-4) and lrs[6] == pytest.approx(1e-4)


def test_interrupt_checkpoints_then_resumes_exactly(tmp_path):
    straight = _trainer(tmp_path / "a", 6)
    straight.fit(export=False)

    base = _loss()
    calls = {"n": 0}

    def loss_with_ctrl_c(model, batch, gen):
        calls["n"] += 1
        if calls["n"] == 4:  # SIGINT arrives in the middle of step 4
            os.kill(os.getpid(), signal.SIGINT)
        return base(model, batch, gen)

    t = Trainer(_model(), loss_with_ctrl_c, _data(), tmp_path / "b", steps=6, batch_size=4, warmup_steps=3,
                checkpoint_every=100, progress=False, lr=1e-3)
    with pytest.raises(KeyboardInterrupt):
        t.fit(export=False)
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["step"] == 4  # step 4 finished, then saved
    resumed = _trainer(tmp_path / "b", 6)
    resumed.fit(export=False)
    _assert_same_state(straight, resumed)
    assert _log_steps(tmp_path / "b") == list(range(1, 7))


def test_existing_checkpoint_needs_resume(tmp_path):
    _trainer(tmp_path, 2).fit(export=False)
    with pytest.raises(ValueError, match="resume"):
        _trainer(tmp_path, 4, resume=False)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    t = _trainer(tmp_path, 2)
    t.fit(export=False)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    t.step = 99

    def broken_save(obj, f, *a, **k):
        f.write(b"partial garbage")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(trainer_mod.torch, "save", broken_save)
    with pytest.raises(OSError, match="simulated"):
        t.save_checkpoint()
    monkeypatch.undo()
    assert (tmp_path / "checkpoint.pt").read_bytes() == before  # old checkpoint intact
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 2
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]  # no temp file left behind


def test_checkpoint_loads_with_weights_only(tmp_path):
    _trainer(tmp_path, 2).fit(export=False)
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ck["step"] == 2 and len(ck["rng"]) == 1


def test_export_reloads_identical_model(tmp_path):
    t = _trainer(tmp_path, 3)
    res = t.fit(export=True)
    assert res.export.name == "model_ema.safetensors"
    m = load_model(res.export)
    assert read_config(res.export)["model_type"] == "score_unet"
    # The export holds the EMA weights, not the raw ones, and rebuilds the same architecture.
    for k, v in m.state_dict().items():
        assert torch.equal(v, t.ema[k]), k
    ref = ScoreUNet(**t.model.config)
    ref.load_state_dict(t.ema)
    ref.eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(m(x, torch.tensor([0.1, 3.0])), ref(x, torch.tensor([0.1, 3.0])), rtol=0, atol=0)
    # A float16 export is half the size and loads back (cast to float32) close to the original.
    p16 = t.export(tmp_path / "half", dtype=torch.float16)
    assert p16.stat().st_size < 0.6 * res.export.stat().st_size
    m16 = load_model(tmp_path / "half")
    for k, v in m16.state_dict().items():
        assert v.dtype == t.ema[k].dtype
        torch.testing.assert_close(v, t.ema[k], rtol=2e-3, atol=1e-4)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "nothing")


def test_bad_options_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="steps"):
        _trainer(tmp_path, 0)
    with pytest.raises(TypeError, match="unknown Trainer options"):
        Trainer(_model(), _loss(), _data(), tmp_path, stepz=3)
    with pytest.raises(TypeError, match="Dataset"):
        Trainer(_model(), _loss(), iter([1, 2]), tmp_path)
    with pytest.raises(ValueError, match="batch_size"):
        Trainer(_model(), _loss(), _data(), tmp_path, batch_size=11)
