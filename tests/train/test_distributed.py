"""DDP on 2 CPU processes (gloo) against single-process training on the combined batch."""
import os
import socket

import torch
import torch.multiprocessing as mp

from bayesmri.priors.score_unet import ScoreUNet
from bayesmri.train import Trainer
from bayesmri.train.score import ImageDataset, smooth_random_images

STEPS, BATCH = 3, 2


def _model():
    torch.manual_seed(0)
    return ScoreUNet(base_channels=4, channel_mult=(1, 2), num_res_blocks=1, attention=False, embed_dim=8)


def _data():
    return ImageDataset(smooth_random_images(16, 16, seed=5))


def _sgd(model):
    # SGD is linear in the gradient, so float reordering in the all-reduce stays at rounding level
    # (Adam's m / sqrt(v) turns rounding noise in near-zero gradients into steps of size lr).
    return torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)


def _loss(model, batch, gen):
    # Deterministic per-sample loss: the mean over 2 ranks of per-rank means is the combined-batch mean.
    out = model(batch, torch.full((batch.shape[0],), 0.5))
    return (out - batch.flip(-1)).pow(2).mean(), {}


def _worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    from bayesmri.train import init_distributed

    info = init_distributed(backend="gloo")
    assert info.world_size == world and info.rank == rank
    m = _model()
    t = Trainer(m, _loss, _data(), out, optimizer=_sgd(m), steps=STEPS, batch_size=BATCH, warmup_steps=0,
                checkpoint_every=2, progress=False)
    t.fit(export=True)
    torch.save({"model": t.model.state_dict(), "ema": t.ema}, os.path.join(out, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_match_single_process_on_combined_batch(tmp_path):
    out = str(tmp_path / "ddp")
    mp.spawn(_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    r0 = torch.load(os.path.join(out, "rank0.pt"), weights_only=True)
    r1 = torch.load(os.path.join(out, "rank1.pt"), weights_only=True)
    for k in r0["model"]:
        assert torch.equal(r0["model"][k], r1["model"][k]), k  # both ranks hold identical weights
    # Only rank 0 wrote the checkpoint, log and export.
    assert sorted(p for p in os.listdir(out) if not p.startswith("rank")) == [
        "checkpoint.pt", "log.csv", "model_ema.json", "model_ema.safetensors"]

    m = _model()
    single = Trainer(m, _loss, _data(), tmp_path / "single", optimizer=_sgd(m), steps=STEPS, batch_size=2 * BATCH,
                     warmup_steps=0, checkpoint_every=2, progress=False)
    single.fit(export=False)
    moved = 0.0
    for k, v in single.model.state_dict().items():
        torch.testing.assert_close(r0["model"][k], v, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(r0["ema"][k], single.ema[k], rtol=1e-5, atol=1e-6)
        moved = max(moved, float((v.float() - _model().state_dict()[k].float()).abs().max()))
    assert moved > 1e-3  # training actually changed the weights
