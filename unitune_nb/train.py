"""Training the embedded cascade on scenes drawn on the fly from the toy world.

Recipe (measured on a 2-core CPU; see docs/training.md): v-prediction on a cosine schedule with
min-SNR loss weighting (gamma 5), AdamW with linear warm-up and gradient clipping, captions with
attribute dropout (p=0.3) and 10% empty captions for classifier-free guidance, EMA weights (decay
0.999 with the (1+n)/(10+n) warm-up).  Super-resolution stages see the true low-res render,
upsampled and noise-augmented to a random level (Imagen Sec. 2.5), and train on random crops since
they are fully convolutional up to their lowest level.

:func:`train_steps` is a generator yielding each step's loss; :func:`train` wraps it with a time
budget, checkpoints (safetensors only, no pickle) and ``resume``.
"""
from __future__ import annotations

import collections
import itertools
import json
import math
import multiprocessing
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DConditionModel
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file, save_file

from . import world
from .cascade import (DEFAULTS, SIZE, check_stage, default_snr_gamma, make_unet, read_defaults, train_scheduler,
                      write_meta)
from .images import to_tensor
from .sample import unet_forward, upsample
from .text import TextEmbedding, TextEncoder


@dataclass
class TrainConfig:
    stage: str = "base"
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 200
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    prediction_type: str | None = None  # what the U-Net predicts; default DEFAULTS[stage] (v, or "sample")
    snr_gamma: float | None = None  # min-SNR loss weighting; 0 = every timestep alike; default by prediction
    drop: float = 0.3
    empty: float = 0.1
    synonyms: float = 0.0  # say each caption phrase in other words (world.SYNONYMS) with this probability
    only: float = 0.0  # say "only" before the object of a one-object scene with this probability
    max_noise_level: int = 350  # SR stages: low-res augmentation level drawn from [0, this]
    crop: int | None = None  # SR stages: train on crops of this size (default: half the output)
    residual_scale: float | None = None  # SR stages: default DEFAULTS[stage]["residual_scale"]
    spike_factor: float = 4.0  # skip an update whose loss is this many times the running mean
    seed: int = 0

    def __post_init__(self) -> None:
        check_stage(self.stage)
        if self.crop is None and self.stage != "base":
            self.crop = SIZE[self.stage] // 2
        if self.residual_scale is None:
            self.residual_scale = DEFAULTS[self.stage].get("residual_scale", 1.0)
        if self.prediction_type is None:
            self.prediction_type = DEFAULTS[self.stage].get("prediction_type", "v_prediction")
        if self.prediction_type not in ("v_prediction", "epsilon", "sample"):
            raise ValueError(f"prediction_type must be v_prediction, epsilon or sample, got {self.prediction_type!r}")
        if self.snr_gamma is None:
            self.snr_gamma = default_snr_gamma(self.prediction_type)

    def stage_defaults(self) -> dict:
        """What sampling must know of how this stage was trained (written into the run's ``unitune_nb.json``)."""
        d = {"prediction_type": self.prediction_type}
        return d if self.stage == "base" else dict(d, residual_scale=self.residual_scale)


def make_batch(cfg: TrainConfig, rng: random.Random) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:
    """Render a batch: target images, low-res inputs (SR stages) and captions with dropout."""
    size = SIZE[cfg.stage]
    targets, lows, caps = [], [], []
    for _ in range(cfg.batch_size):
        scene = world.random_scene(rng.randrange(1 << 31))
        master = world.render(scene, world.MASTER)
        targets.append(master.reduce(world.MASTER // size))
        if cfg.stage != "base":
            lows.append(master.reduce(world.MASTER // (size // 2)))
        caps.append(world.caption(scene, drop=cfg.drop, empty=cfg.empty, rng=rng, synonyms=cfg.synonyms,
                                 only=cfg.only))
    return to_tensor(targets), (to_tensor(lows) if lows else None), caps


def diffusion_loss(unet: UNet2DConditionModel, x0: torch.Tensor, text: TextEmbedding, low: torch.Tensor | None = None,
                   generator: torch.Generator | None = None, max_noise_level: int = 350, snr_gamma: float | None = 5.0,
                   crop: int | None = None, rng: random.Random | None = None,
                   residual_scale: float = 1.0, scheduler=None, residual: bool = True) -> torch.Tensor:
    """The training objective of one stage on a batch: MSE on the scheduler's prediction type, min-SNR weighted.

    ``low`` (SR stages) is the low-res image; it is upsampled and noised to a random augmentation
    level in ``[0, max_noise_level]`` that the U-Net is told (Imagen Sec. 2.5).  SR stages diffuse
    the residual ``x0 - upsample(low)``: they start from a sharp-less but right-coloured image and
    only learn the detail, which trains far faster on a CPU than predicting the whole image; the
    residual is multiplied by ``residual_scale`` (``residual=False`` diffuses the image itself, as
    DeepFloyd IF's stage II).  ``crop`` trains on a random crop of that
    size.  ``scheduler`` (default: ours, v-prediction; SR stages pass a ``"sample"`` one) sets the noise schedule and target;
    ``snr_gamma=None`` (or 0) weighs every timestep alike.  A U-Net that also predicts a variance (IF) is
    trained on its noise half.  Used by training and by UniTune's fine-tuning alike.
    """
    sched = scheduler or loss_scheduler()
    unet_param = next(unet.parameters())
    device, dtype = unet_param.device, unet_param.dtype
    b = x0.shape[0]
    lr_in = lvl = None
    x0 = x0.to(device, torch.float32)
    if low is not None:
        lvl = torch.randint(0, max_noise_level + 1, (b,), generator=generator)
        up = upsample(low.to(device, torch.float32), x0.shape[-1])
        lr_in = sched.add_noise(up, torch.randn(up.shape, generator=generator).to(device), lvl.to(device))
        lvl = lvl.to(device)
        if residual:
            x0 = (x0 - up) * residual_scale  # SR stages model the residual over the (clean) upsample
        if crop and crop < x0.shape[-1]:
            rng = rng or random.Random()
            i, j = rng.randrange(x0.shape[-1] - crop + 1), rng.randrange(x0.shape[-1] - crop + 1)
            x0 = x0[..., i:i + crop, j:j + crop]
            lr_in = lr_in[..., i:i + crop, j:j + crop]
    noise = torch.randn(x0.shape, generator=generator).to(device)
    t = torch.randint(0, sched.config.num_train_timesteps, (b,), generator=generator).to(device)
    xt = sched.add_noise(x0, noise, t)
    kind = sched.config.prediction_type
    target = sched.get_velocity(x0, noise, t) if kind == "v_prediction" else noise if kind == "epsilon" else x0
    pred = unet_forward(unet, xt.to(dtype), t, text.to(device, dtype), None if lr_in is None else lr_in.to(dtype), lvl)
    if pred.shape[1] == 2 * target.shape[1]:  # learned variance (IF): train the noise half
        pred = pred[:, : target.shape[1]]
    err = F.mse_loss(pred.float(), target, reduction="none").mean(dim=(1, 2, 3))
    if not snr_gamma:
        return err.mean()
    alphas = sched.alphas_cumprod.to(device)
    snr = alphas[t] / (1 - alphas[t])
    weight = torch.clamp(snr, max=snr_gamma) / ((snr + 1) if kind == "v_prediction" else snr)  # min-SNR
    return (weight * err).mean()


_SCHEDULERS: dict[str, DDPMScheduler] = {}


def loss_scheduler(prediction_type: str = "v_prediction") -> DDPMScheduler:
    """The training noise schedule for ``prediction_type``, built once: losses only read it (UniTune's tuning
    calls the loss every iteration)."""
    if prediction_type not in _SCHEDULERS:
        _SCHEDULERS[prediction_type] = train_scheduler(prediction_type)
    return _SCHEDULERS[prediction_type]


def batch_seed(cfg: TrainConfig, step: int) -> int:
    """The seed batch ``step`` is drawn from: each batch has its own, so the stream of batches is the same
    however many processes render it (and after ``--resume``)."""
    return cfg.seed * 1_000_003 + step


def _init_worker() -> None:
    torch.set_num_threads(1)  # the workers only draw scenes; one core each


def _render(cfg: TrainConfig, seed: int) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Worker side of :func:`batches`: one batch as numpy arrays (cheap to send between processes)."""
    x0, low, caps = make_batch(cfg, random.Random(seed))
    return x0.numpy(), None if low is None else low.numpy(), caps


def batches(cfg: TrainConfig, start_step: int = 0,
            workers: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, list[str]]]:
    """Training batches from ``start_step`` on, forever.  ``workers > 0`` draws them ahead in that many
    processes: on a GPU one CPU core drawing scenes (about 3 ms a scene) would leave the U-Net idle."""
    if workers <= 0:
        for step in itertools.count(start_step):
            yield make_batch(cfg, random.Random(batch_seed(cfg, step)))
        return
    pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker)
    pending: collections.deque = collections.deque()
    try:
        step = start_step
        while True:
            while len(pending) < 2 * workers:  # a bounded queue: never more than two batches per worker ahead
                pending.append(pool.apply_async(_render, (cfg, batch_seed(cfg, step))))
                step += 1
            x0, low, caps = pending.popleft().get()
            yield torch.from_numpy(x0), None if low is None else torch.from_numpy(low), caps
    finally:
        # Let the batches in flight arrive, then stop the workers cleanly: terminating a pool while results
        # are still coming (what `with Pool()` does on exit) can leave its result thread waiting forever.
        for r in pending:
            r.wait(timeout=60)
        if all(r.ready() for r in pending):
            pool.close()
            pool.join()
        else:  # a worker that hangs: nothing clean is possible
            pool.terminate()


def train_steps(unet: UNet2DConditionModel, cfg: TrainConfig, text_encoder: TextEncoder,
                optimizer: torch.optim.Optimizer, ema: EMAModel, start_step: int = 0, workers: int = 0,
                lr_at: Callable[[int], float] | None = None) -> Iterator[float]:
    """Run training steps forever on the U-Net's device, yielding each step's loss (stop by breaking out of
    the loop).  ``lr_at(step)`` gives the learning rate after warm-up (default: ``cfg.lr`` throughout);
    ``workers`` draw the batches in other processes (:func:`batches`)."""
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + start_step)
    step = start_step
    scheduler = loss_scheduler(cfg.prediction_type)
    avg = None  # running mean of the loss, for the spike guard
    unet.train()
    stream = batches(cfg, start_step, workers)
    try:
        for x0, low, caps in stream:
            crop_rng = random.Random(f"crop {batch_seed(cfg, step)}")
            loss = diffusion_loss(unet, x0, text_encoder(caps), low, gen, cfg.max_noise_level, cfg.snr_gamma,
                                  cfg.crop, crop_rng, cfg.residual_scale, scheduler=scheduler)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss.item()} at step {step}; lower --lr and --resume")
            value = loss.item()
            if avg is not None and value > cfg.spike_factor * avg:
                # a loss spike: skip this update.  One such step destroyed a 5,000-step base run (loss 0.008 -> 0.25,
                # never recovered), and checkpoints then overwrote the good weights.
                step += 1
                yield value
                continue
            avg = value if avg is None else 0.98 * avg + 0.02 * value
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), cfg.grad_clip)
            lr = lr_at(step) if lr_at is not None else cfg.lr
            for g in optimizer.param_groups:
                g["lr"] = lr * min(1.0, (step + 1) / max(1, cfg.warmup))
            optimizer.step()
            ema.step(unet.parameters())
            step += 1
            yield value
    finally:
        stream.close()  # stops the worker processes


# ---------------------------------------------------------------------- checkpoints (safetensors only)
def _save_optimizer(opt: torch.optim.Optimizer, names: list[str], file: Path) -> None:
    tensors = {}
    for name, p in zip(names, opt.param_groups[0]["params"]):
        for k, v in opt.state.get(p, {}).items():
            if torch.is_tensor(v):
                tensors[f"{name}::{k}"] = v.detach().cpu().contiguous().reshape(v.shape if v.ndim else (1,))
    save_file(tensors, str(file))


def _load_optimizer(opt: torch.optim.Optimizer, names: list[str], file: Path) -> None:
    tensors = load_file(str(file))
    for name, p in zip(names, opt.param_groups[0]["params"]):
        st = {}
        for key, v in tensors.items():
            n, k = key.split("::")
            if n == name:  # moments on the parameter's device; the step count where the optimiser keeps it
                st[k] = v.reshape(()) if k == "step" else v.to(p.device)
        if st:
            opt.state[p] = st


def save_checkpoint(out: Path, stage: str, unet: UNet2DConditionModel, ema: EMAModel,
                    opt: torch.optim.Optimizer, state: dict, stage_defaults: dict | None = None) -> None:
    """Write the EMA weights as a loadable diffusers folder ``out/stage`` plus a resumable train state;
    ``stage_defaults`` (how the stage was trained: :meth:`TrainConfig.stage_defaults`) go into the folder's
    ``unitune_nb.json`` beside the other stages' entries."""
    names = [n for n, _ in unet.named_parameters()]
    tmp = out / f".{stage}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    ema_unet = UNet2DConditionModel.from_config(unet.config)
    ema.copy_to(ema_unet.parameters())
    ema_unet.save_pretrained(tmp / "ema", safe_serialization=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in unet.state_dict().items()}, str(tmp / "model.safetensors"))
    _save_optimizer(opt, names, tmp / "optimizer.safetensors")
    (tmp / "state.json").write_text(json.dumps(state, indent=2))
    # swap in atomically-ish: a crash leaves either the old or the new checkpoint
    final_state = out / "train_state" / stage
    final_state.parent.mkdir(parents=True, exist_ok=True)
    import shutil

    for src, dst in ((tmp / "ema", out / stage), (tmp, final_state)):
        old = dst.with_name(dst.name + ".old")
        if dst.exists():
            shutil.rmtree(old, ignore_errors=True)
            dst.rename(old)
        if src == tmp:
            src.rename(dst)
        else:
            shutil.move(str(src), str(dst))
        shutil.rmtree(old, ignore_errors=True)
    defaults = {s: dict(v) for s, v in (read_defaults(out) or DEFAULTS).items()}
    defaults[stage] = {**defaults.get(stage, DEFAULTS[stage]), **(stage_defaults or {})}
    write_meta(out, defaults)


def train(stage: str, out: str | Path, minutes: float | None = None, steps: int | None = None,
          resume: bool = False, checkpoint_every: float = 5.0, progress: bool = True,
          text_encoder: TextEncoder | None = None, init_from: str | Path | None = None,
          device: str | torch.device | None = None, workers: int = 0, lr_end: float | None = None, **config) -> dict:
    """Train one stage into ``out`` for ``minutes`` of wall time or ``steps`` steps, whichever ends first.

    Checkpoints every ``checkpoint_every`` minutes and at the end; ``resume=True`` continues from
    the last checkpoint in ``out``.  ``init_from`` (a cascade folder, e.g. the shipped weights)
    starts a new run from that stage's weights with a fresh optimiser, so a model can be trained
    further without its training state.  ``device`` defaults to CUDA where there is one; ``workers``
    processes draw the scenes (worth it on a GPU: one CPU core cannot keep up with it); ``lr_end``
    decays the learning rate from ``lr`` to it along a cosine over this run's steps or minutes,
    whichever runs out first (default: constant).  Returns a summary (steps, seconds, last losses).
    The workers are started with "spawn": a script that calls this with ``workers`` needs the usual
    ``if __name__ == "__main__":`` guard (the CLI and notebooks need nothing).
    """
    from tqdm.auto import tqdm

    if minutes is None and steps is None:
        raise ValueError("give --minutes or --steps (or both) so training knows when to stop")
    out = Path(out)
    state_dir = out / "train_state" / stage
    prev = {}
    if resume and (state_dir / "state.json").is_file():
        prev = json.loads((state_dir / "state.json").read_text())
        prev["config"].setdefault("prediction_type", "v_prediction")  # runs from before SR stages predicted x0
        config = {**prev["config"], **{k: v for k, v in config.items() if v is not None}}
    elif resume:
        print(f"nothing to resume in {state_dir}; starting {stage} from scratch")
    if init_from is not None and not prev:  # train further the way the weights were trained unless told otherwise
        was = read_defaults(Path(init_from)).get(stage, {})
        if config.get("prediction_type") is None:
            config["prediction_type"] = was.get("prediction_type", "v_prediction")
        if stage != "base" and config.get("residual_scale") is None:
            config["residual_scale"] = was.get("residual_scale", 1.0)
    cfg = TrainConfig(stage=stage, **{k: v for k, v in config.items() if v is not None and k != "stage"})
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(cfg.seed)
    unet = make_unet(stage, seed=cfg.seed)
    names = [n for n, _ in unet.named_parameters()]
    if init_from is not None and not prev:
        src = Path(init_from)
        if not (src / stage / "config.json").is_file():
            raise FileNotFoundError(f"--init-from {src}: no stage {stage!r} there (expected {src / stage / 'config.json'})")
        unet.load_state_dict(UNet2DConditionModel.from_pretrained(src, subfolder=stage,
                                                                  torch_dtype=torch.float32, low_cpu_mem_usage=False).state_dict())
    unet.to(dev)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = EMAModel(unet.parameters(), decay=cfg.ema_decay)
    start = 0
    elapsed0 = 0.0
    if prev:
        unet.load_state_dict(load_file(str(state_dir / "model.safetensors")))
        ema_unet = UNet2DConditionModel.from_pretrained(out / stage, low_cpu_mem_usage=False)
        ema = EMAModel(ema_unet.parameters(), decay=cfg.ema_decay)
        ema.to(dev)
        ema.optimization_step = prev["step"]
        _load_optimizer(opt, names, state_dir / "optimizer.safetensors")
        start, elapsed0 = prev["step"], prev["seconds"]
    te = (text_encoder or TextEncoder()).to(dev)
    losses: list[float] = []
    t_start = time.perf_counter()
    last_ckpt = t_start
    step = start
    budget = minutes * 60 if minutes is not None else math.inf
    bar = tqdm(total=steps, initial=0, desc=f"train {stage}", disable=not progress, unit="step")

    def state() -> dict:
        return {"step": step, "seconds": elapsed0 + time.perf_counter() - t_start, "config": asdict(cfg),
                "recent_loss": float(np.mean(losses[-50:])) if losses else None,
                "threads": torch.get_num_threads(), "device": str(dev), "workers": workers,
                "lr": opt.param_groups[0]["lr"]}

    def lr_at(at: int) -> float:  # cosine from cfg.lr to lr_end over this run's budget
        done = max((at - start) / steps if steps else 0.0,
                   (time.perf_counter() - t_start) / budget if math.isfinite(budget) else 0.0)
        return lr_end + (cfg.lr - lr_end) * 0.5 * (1 + math.cos(math.pi * min(1.0, done)))

    run = train_steps(unet, cfg, te, opt, ema, start_step=start, workers=workers,
                      lr_at=lr_at if lr_end is not None else None)
    try:
        for loss in run:
            step += 1
            losses.append(loss)
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
            now = time.perf_counter()
            if (steps is not None and step - start >= steps) or now - t_start >= budget:
                break
            if now - last_ckpt >= checkpoint_every * 60:
                save_checkpoint(out, stage, unet, ema, opt, state(), cfg.stage_defaults())
                last_ckpt = now
    finally:
        run.close()
        bar.close()
        if step > start:
            save_checkpoint(out, stage, unet, ema, opt, state(), cfg.stage_defaults())
    return state()
