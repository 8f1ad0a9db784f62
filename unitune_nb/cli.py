"""The ``unitune-nb`` command line: generate, train, eval, export."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _threads(n: int | None) -> None:
    import torch

    if n:
        torch.set_num_threads(n)


def cmd_generate(a: argparse.Namespace) -> None:
    from .cascade import Cascade

    c = Cascade.from_pretrained(a.weights)
    out = c.generate(a.prompt, seed=a.seed, guidance_scale=a.guidance_scale, progress=True)
    path = Path(a.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    out.image.save(path)
    msg = f"wrote {path} ({out.image.width} px, {sum(out.seconds.values()):.2f} s)"
    if a.stages_strip:
        sp = path.with_name(path.stem + "_stages" + path.suffix)
        out.strip(128).save(sp)
        msg += f" and {sp}"
    print(msg)


def _raise_interrupt(signum, frame):  # SIGTERM (kill, session end) -> save a checkpoint, then stop
    raise KeyboardInterrupt


def cmd_train(a: argparse.Namespace) -> None:
    import signal

    from .train import train

    signal.signal(signal.SIGTERM, _raise_interrupt)

    summary = train(a.stage, a.out, minutes=a.minutes, steps=a.steps, resume=a.resume,
                    checkpoint_every=a.checkpoint_every, batch_size=a.batch_size, lr=a.lr, seed=a.seed)
    print(f"{a.stage}: {summary['step']} steps, {summary['seconds'] / 60:.1f} min in all, "
          f"recent loss {summary['recent_loss']:.4f}; weights in {Path(a.out) / a.stage}")


def cmd_eval(a: argparse.Namespace) -> None:
    from .eval import evaluate, format_report

    report = evaluate(a.weights, n=a.n, sr_n=a.sr_n, guidance_scale=a.guidance_scale, seed=a.seed)
    text = format_report(report)
    print(text)
    if a.json:
        import json

        Path(a.json).write_text(json.dumps(report, indent=2))


def cmd_export(a: argparse.Namespace) -> None:
    from .cascade import Cascade

    c = Cascade.from_pretrained(a.run)
    c.save_pretrained(a.out, fp16=True)
    size = sum(f.stat().st_size for f in Path(a.out).rglob("*") if f.is_file())
    print(f"wrote {a.out} ({size / 1e6:.1f} MB, stages {', '.join(c.stages)})")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="unitune-nb", description="UniTune teaching toolkit on an embedded mini-Imagen.")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="text -> 128 px image through the embedded cascade")
    g.add_argument("prompt")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out", default="out.png")
    g.add_argument("--guidance-scale", type=float, default=None)
    g.add_argument("--stages-strip", action="store_true", help="also write NAME_stages.png with every stage")
    g.add_argument("--weights", default=None, help="cascade folder (default: the shipped weights)")
    g.set_defaults(func=cmd_generate)

    t = sub.add_parser("train", help="train one stage of the cascade (checkpoints, --resume)")
    t.add_argument("--stage", required=True, help="base, sr1 or sr2")
    t.add_argument("--out", required=True, help="run folder (a cascade folder once trained)")
    t.add_argument("--minutes", type=float, default=None)
    t.add_argument("--steps", type=int, default=None)
    t.add_argument("--resume", action="store_true")
    t.add_argument("--checkpoint-every", type=float, default=5.0, help="minutes between checkpoints")
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--seed", type=int, default=None)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="text-following accuracy and SR PSNR of a cascade")
    e.add_argument("--weights", default=None)
    e.add_argument("--n", type=int, default=240, help="held-out captions for the base stage")
    e.add_argument("--sr-n", type=int, default=32, help="scenes for the SR PSNR check")
    e.add_argument("--guidance-scale", type=float, default=None)
    e.add_argument("--seed", type=int, default=12345)
    e.add_argument("--json", default=None, help="also write the report as JSON here")
    e.set_defaults(func=cmd_eval)

    x = sub.add_parser("export", help="copy a training run into a shippable fp16 cascade folder")
    x.add_argument("run")
    x.add_argument("--out", required=True)
    x.set_defaults(func=cmd_export)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    a = build_parser().parse_args(argv)
    _threads(a.threads)
    try:
        a.func(a)
    except (ValueError, FileNotFoundError, FloatingPointError) as err:
        print(f"unitune-nb {a.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"unitune-nb {a.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
