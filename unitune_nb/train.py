"""Training the embedded cascade on scenes drawn on the fly from the toy world.

Recipe (why each part: docs/training.md): v-prediction on a cosine schedule with
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
from diffusers import UNet2DConditionModel
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file, save_file

from . import world
from .adapters import StageAdapter
from .cascade import DEFAULTS, SIZE, check_stage, default_snr_gamma, make_unet, read_defaults, stage_adapter, write_meta
from .diffusion import diffusion_loss
from .images import to_tensor
from .text import TextEncoder


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

    def adapter(self) -> StageAdapter:
        """The stage's adapter with this run's prediction type, residual scale and loss weighting."""
        return stage_adapter(self.stage, self.stage_defaults(), snr_gamma=self.snr_gamma)


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
    processes: on a GPU one CPU core drawing scenes would leave the U-Net idle."""
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
    adapter = cfg.adapter()
    avg = None  # running mean of the loss, for the spike guard
    unet.train()
    stream = batches(cfg, start_step, workers)
    try:
        for x0, low, caps in stream:
            crop_rng = random.Random(f"crop {batch_seed(cfg, step)}")
            loss = diffusion_loss(unet, adapter, x0, text_encoder(caps), low, gen, cfg.max_noise_level, cfg.crop,
                                  crop_rng)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss.item()} at step {step}; lower --lr and --resume")
            value = loss.item()
            if avg is not None and value > cfg.spike_factor * avg:
                # a loss spike: skip this update (one can wreck a long run, and checkpoints would then
                # overwrite the good weights; docs/training.md)
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


def _run_config(stage: str, out: Path, resume: bool, init_from: str | Path | None, config: dict) -> tuple[TrainConfig, dict]:
    """The run's config and, when resuming, the saved train state: a resumed run keeps its config unless told
    otherwise; a run from ``init_from`` trains the way those weights were trained unless told otherwise."""
    state_dir = out / "train_state" / stage
    prev = {}
    if resume and (state_dir / "state.json").is_file():
        prev = json.loads((state_dir / "state.json").read_text())
        prev["config"].setdefault("prediction_type", "v_prediction")  # runs from before SR stages predicted x0
        config = {**prev["config"], **{k: v for k, v in config.items() if v is not None}}
    elif resume:
        print(f"nothing to resume in {state_dir}; starting {stage} from scratch")
    if init_from is not None and not prev:
        was = read_defaults(Path(init_from)).get(stage, {})
        if config.get("prediction_type") is None:
            config["prediction_type"] = was.get("prediction_type", "v_prediction")
        if stage != "base" and config.get("residual_scale") is None:
            config["residual_scale"] = was.get("residual_scale", 1.0)
    cfg = TrainConfig(stage=stage, **{k: v for k, v in config.items() if v is not None and k != "stage"})
    return cfg, prev


def _init_weights(unet: UNet2DConditionModel, stage: str, init_from: str | Path) -> None:
    src = Path(init_from)
    if not (src / stage / "config.json").is_file():
        raise FileNotFoundError(f"--init-from {src}: no stage {stage!r} there (expected {src / stage / 'config.json'})")
    loaded = UNet2DConditionModel.from_pretrained(src, subfolder=stage, torch_dtype=torch.float32,
                                                  low_cpu_mem_usage=False)
    unet.load_state_dict(loaded.state_dict())


def _resume(out: Path, stage: str, prev: dict, unet: UNet2DConditionModel, opt: torch.optim.Optimizer,
            cfg: TrainConfig, dev: torch.device) -> EMAModel:
    """Load the last checkpoint's weights, EMA and optimiser state into this run."""
    state_dir = out / "train_state" / stage
    unet.load_state_dict(load_file(str(state_dir / "model.safetensors")))
    ema = EMAModel(UNet2DConditionModel.from_pretrained(out / stage, low_cpu_mem_usage=False).parameters(),
                   decay=cfg.ema_decay)
    ema.to(dev)
    ema.optimization_step = prev["step"]
    _load_optimizer(opt, [n for n, _ in unet.named_parameters()], state_dir / "optimizer.safetensors")
    return ema


def _cosine(lr: float, lr_end: float, done: float) -> float:
    """The learning rate ``done`` (0-1) of the way along a cosine from ``lr`` to ``lr_end``."""
    return lr_end + (lr - lr_end) * 0.5 * (1 + math.cos(math.pi * min(1.0, done)))


def train(stage: str, out: str | Path, minutes: float | None = None, steps: int | None = None,
          resume: bool = False, checkpoint_every: float = 5.0, progress: bool = True,
          text_encoder: TextEncoder | None = None, init_from: str | Path | None = None,
          device: str | torch.device | None = None, workers: int = 0, lr_end: float | None = None, **config) -> dict:
    """Train one stage into ``out`` for ``minutes`` of wall time or ``steps`` steps, whichever ends first.

    Checkpoints every ``checkpoint_every`` minutes and at the end; ``resume=True`` continues from
    the last checkpoint in ``out``.  ``init_from`` (a cascade folder, e.g. the shipped weights)
    starts a new run from that stage's weights with a fresh optimiser.  ``device`` defaults to CUDA where
    there is one; ``workers`` processes draw the scenes (worth it on a GPU); ``lr_end`` decays the learning
    rate from ``lr`` to it along a cosine over this run's steps or minutes, whichever runs out first
    (default: constant).  Returns a summary (steps, seconds, last losses).  The workers are started with
    "spawn": a script that calls this with ``workers`` needs the ``if __name__ == "__main__":`` guard.
    """
    if minutes is None and steps is None:
        raise ValueError("give --minutes or --steps (or both) so training knows when to stop")
    out = Path(out)
    cfg, prev = _run_config(stage, out, resume, init_from, config)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(cfg.seed)
    unet = make_unet(stage, seed=cfg.seed)
    if init_from is not None and not prev:
        _init_weights(unet, stage, init_from)
    unet.to(dev)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = _resume(out, stage, prev, unet, opt, cfg, dev) if prev else EMAModel(unet.parameters(), decay=cfg.ema_decay)
    run = _Run(out, cfg, unet, opt, ema, dev, workers, prev.get("step", 0), prev.get("seconds", 0.0))
    return run.loop(text_encoder or TextEncoder(), minutes, steps, checkpoint_every, progress, lr_end)


class _Run:
    """One training run's loop: steps, time budget, learning-rate schedule, checkpoints."""

    def __init__(self, out: Path, cfg: TrainConfig, unet, opt, ema, dev: torch.device, workers: int, start: int,
                 elapsed0: float):
        self.out, self.cfg, self.unet, self.opt, self.ema, self.dev = out, cfg, unet, opt, ema, dev
        self.workers, self.start, self.step, self.elapsed0 = workers, start, start, elapsed0
        self.losses: list[float] = []
        self.t_start = time.perf_counter()

    def state(self) -> dict:
        return {"step": self.step, "seconds": self.elapsed0 + time.perf_counter() - self.t_start,
                "config": asdict(self.cfg), "recent_loss": float(np.mean(self.losses[-50:])) if self.losses else None,
                "threads": torch.get_num_threads(), "device": str(self.dev), "workers": self.workers,
                "lr": self.opt.param_groups[0]["lr"]}

    def checkpoint(self) -> None:
        save_checkpoint(self.out, self.cfg.stage, self.unet, self.ema, self.opt, self.state(), self.cfg.stage_defaults())

    def loop(self, text_encoder: TextEncoder, minutes: float | None, steps: int | None, checkpoint_every: float,
             progress: bool, lr_end: float | None) -> dict:
        from tqdm.auto import tqdm

        budget = minutes * 60 if minutes is not None else math.inf

        def lr_at(at: int) -> float:  # cosine from cfg.lr to lr_end over this run's budget
            done = max((at - self.start) / steps if steps else 0.0,
                       (time.perf_counter() - self.t_start) / budget if math.isfinite(budget) else 0.0)
            return _cosine(self.cfg.lr, lr_end, done)

        it = train_steps(self.unet, self.cfg, text_encoder.to(self.dev), self.opt, self.ema, start_step=self.start,
                         workers=self.workers, lr_at=lr_at if lr_end is not None else None)
        bar = tqdm(total=steps, desc=f"train {self.cfg.stage}", disable=not progress, unit="step")
        last_ckpt = self.t_start
        try:
            for loss in it:
                self.step += 1
                self.losses.append(loss)
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(self.losses[-20:]):.4f}")
                now = time.perf_counter()
                if (steps is not None and self.step - self.start >= steps) or now - self.t_start >= budget:
                    break
                if now - last_ckpt >= checkpoint_every * 60:
                    self.checkpoint()
                    last_ckpt = now
        finally:
            it.close()
            bar.close()
            if self.step > self.start:
                self.checkpoint()
        return self.state()
