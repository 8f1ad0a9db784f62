"""The workshop exercises: every notebook solution passes its check, typical wrong answers get the intended hint,
stubs say "not done yet", and the quizzes accept the right answers only."""
import contextlib
import io
import json
import re
import warnings
from pathlib import Path

import pytest
import torch

from unitune_nb import bench, exercises, world
from unitune_nb.diffusion import guide, q_sample, upsample

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
SOLUTION = re.compile(r"<summary>Solution</summary>\s*```python\n(.*?)```", re.S)


def _exercise_cells() -> list[tuple[str, str, str, str]]:
    """(notebook, number, stub code, solution code) for every exercise in the notebooks."""
    out = []
    for nb in sorted(NOTEBOOKS.glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        for i, c in enumerate(cells):
            m = re.match(r"\*\*Exercise (\S+)\*\*", "".join(c["source"])) if c["cell_type"] == "markdown" else None
            if m:
                stub, sol = "".join(cells[i + 1]["source"]), SOLUTION.search("".join(cells[i + 2]["source"]))
                assert cells[i + 1]["cell_type"] == "code" and sol, f"{nb.name} exercise {m[1]}: stub, then solution"
                out.append((nb.name, m[1], stub, sol[1]))
    return out


EXERCISES = _exercise_cells()


def _run(code: str, namespace: dict) -> tuple[bool, str]:
    """Execute a cell whose last line is a check call; returns the check's result and what it printed."""
    lines = code.rstrip().splitlines()
    assert lines[-1].startswith("check_"), "an exercise cell ends with its check call"
    lines[-1] = "__ok__ = " + lines[-1].rstrip(";")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec("\n".join(lines), namespace)
    return namespace["__ok__"], buf.getvalue()


@pytest.fixture
def namespace(ut):
    """What the exercise cells find in their notebook (notebook 03's `edit` stands in for the tuned model's
    sample at w = 0.5: the source's purple house, which notebook 03 shows the tuned token draws)."""
    case = bench.Case(31000003, "recolour", "yellow")
    return {"ut": ut, "te": ut.cascade.text_encoder, "world": world, "bench": bench, "warnings": warnings,
            "probe": exercises._probe(), "full": bench.shipped_summary(), "cases": bench.load_cases(), "case": case,
            "edit": lambda prompt, **kw: world.render(case.scene, 32)}


def test_every_notebook_has_exercises_quizzes_and_a_summary():
    numbers = [n for _, n, _, _ in EXERCISES]
    assert len(numbers) >= 12 and len(set(numbers)) == len(numbers), numbers
    assert {nb[:2] for nb, *_ in EXERCISES} >= {"00", "01", "02", "03", "04", "06"}
    checks = {n for n in exercises.__all__ if n.startswith("check_")}
    used = {m for *_, stub, _ in EXERCISES for m in re.findall(r"\b(check_\w+)\(", stub)}
    assert checks == used, f"checks without an exercise or the reverse: {checks ^ used}"
    for prefix in ("00", "01", "02", "03", "04", "05", "06", "07"):
        nb = next(NOTEBOOKS.glob(f"{prefix}_*.ipynb"))
        text = "".join("".join(c["source"]) for c in json.loads(nb.read_text())["cells"])
        asked = set(re.findall(r'answer\("(\d\d\.\d)"', text))
        assert asked == {q for q in exercises.QUIZ if q.startswith(prefix)} and len(asked) >= 2, (nb.name, asked)
        assert "## Check your understanding" in text and "## What you learned" in text, nb.name


@pytest.mark.parametrize("notebook,number,stub,solution", EXERCISES, ids=[e[1] for e in EXERCISES])
def test_solution_passes_and_stub_is_not_done(notebook, number, stub, solution, namespace):
    ok, out = _run(solution, dict(namespace))
    assert ok is True and f"Exercise {number}" in out and "passed" in out, out
    ok, out = _run(stub, dict(namespace))
    assert ok is False and "not done yet" in out, out


def _mask(r, ref, lo, hi):
    d = (r - ref).pow(2).sum(1, keepdim=True).sqrt()
    u = ((d - lo) / (hi - lo)).clamp(0, 1)
    return u * u * (3 - 2 * u)


def _step(sign: float = 1.0, zero: bool = True, step: bool = True):
    def tuning_step(ut, opt, x0, text, generator):
        loss = ut.cascade.loss("base", x0, None, text, generator)
        if zero:
            opt.zero_grad()
        (sign * loss).backward()
        if step:
            opt.step()
        return loss.item()
    return tuning_step


WRONG = {
    "cfg sign": (exercises.check_cfg, lambda u, c, w: u - w * (c - u), "sign"),
    "cfg baseline swapped": (exercises.check_cfg, lambda u, c, w: c + w * (u - c), "swapped"),
    "cfg missing baseline": (exercises.check_cfg, lambda u, c, w: w * (c - u), "baseline term is missing"),
    "pg baseline empty": (exercises.check_prompt_guidance,
                          lambda p, x, r, wd, w: guide(torch.cat([p(x, ""), p(x, f"{r} {wd}")]), w), "empty prompt"),
    "pg no rare token": (exercises.check_prompt_guidance,
                         lambda p, x, r, wd, w: guide(torch.cat([p(x, r), p(x, wd)]), w), "lacks the rare token"),
    "x0 missing sqrt": (exercises.check_x0_from_v, lambda v, xt, a: a * xt - (1 - a) * v, "square root"),
    "x0 as epsilon": (exercises.check_x0_from_v, lambda v, xt, a: (xt - (1 - a).sqrt() * v) / a.sqrt(), "noise epsilon"),
    "augment nearest": (exercises.check_noise_augmentation, lambda lo, s, lv, ac, n: q_sample(
        ac, torch.nn.functional.interpolate(lo, size=(s, s), mode="nearest"), n, lv), "bilinear"),
    "augment unscaled noise": (exercises.check_noise_augmentation, lambda lo, s, lv, ac, n: ac[lv].sqrt().reshape(
        -1, 1, 1, 1) * upsample(lo, s) + n, "not scaled"),
    "q_sample missing sqrt": (exercises.check_q_sample, lambda ac, x0, n, t: ac[t].reshape(-1, 1, 1, 1) * x0 + (
        1 - ac[t].reshape(-1, 1, 1, 1)) * n, "square root"),
    "q_sample no broadcast": (exercises.check_q_sample, lambda ac, x0, n, t: ac[t].sqrt() * x0, "[B, 1, 1, 1]"),
    "fraction without sqrt": (exercises.check_signal_fraction, lambda ac, t0: float(ac[round(t0 * 1000) - 1]),
                              "square root"),
    "fraction of the noise": (exercises.check_signal_fraction,
                              lambda ac, t0: float((1 - ac[round(t0 * 1000) - 1]) ** 0.5), "noise's amplitude"),
    "fraction linear": (exercises.check_signal_fraction, lambda ac, t0: 1 - t0, "linear guess"),
    "blend mask inverted": (exercises.check_blend, lambda r, s, m, a: r + a * m * (s - r), "inverted"),
    "blend strength ignored": (exercises.check_blend, lambda r, s, m, a: r + (1 - m) * (s - r), "strength is ignored"),
    "mask inverted": (exercises.check_mask, lambda r, ref, lo, hi: 1 - _mask(r, ref, lo, hi), "inverted"),
    "mask linear": (exercises.check_mask, lambda r, ref, lo, hi: ((r - ref).pow(2).sum(1, keepdim=True).sqrt() - lo)
                    .div(hi - lo).clamp(0, 1), "smoothstep"),
    "mask per channel": (exercises.check_mask, lambda r, ref, lo, hi: (r - ref).abs(), "shape"),
    "choose ignores psnr": (exercises.check_choose_setting, lambda pts, m: max(pts, key=lambda p: p["success"]),
                            "less than asked"),
    "choose most psnr": (exercises.check_choose_setting, lambda pts, m: max(pts, key=lambda p: p["psnr"]),
                         "edits more often"),
}


@pytest.mark.parametrize("name", list(WRONG))
def test_typical_wrong_answers_get_their_hint(name, capsys):
    check, wrong, phrase = WRONG[name]
    assert check(wrong) is False
    out = capsys.readouterr().out
    assert "not quite. Hint:" in out and phrase in out, out


def test_model_checks_name_the_mistake(ut, text_encoder, capsys):
    te = text_encoder
    before = [p.detach().clone() for p in ut.cascade.unets["base"].parameters()]
    cases = [
        (lambda: exercises.check_rare_token(lambda te, w: te.is_known_word(w), te), "inverted"),
        (lambda: exercises.check_rare_token(lambda te, w: len(w) > 4, te), "'house'"),
        (lambda: exercises.check_tuning_step(_step(sign=-1.0), ut), "up the loss"),
        (lambda: exercises.check_tuning_step(_step(zero=False), ut), "zero_grad"),
        (lambda: exercises.check_tuning_step(_step(step=False), ut), "did not move"),
        (lambda: exercises.check_guidance_prediction("yellow", world.render(world.random_scene(31000003), 32)),
         "you predicted yellow"),
        (lambda: exercises.check_guidance_prediction("blueish", None), "one colour"),
    ]
    for run, phrase in cases:
        assert run() is False
        out = capsys.readouterr().out
        assert "Hint:" in out and phrase in out, out
    assert all(torch.equal(a, b) for a, b in zip(before, ut.cascade.unets["base"].parameters())), \
        "the tuning-step check must put the weights back"


def test_capstone_and_removal_catch_wrong_reports(capsys):
    case = bench.Case(2, "time", "day")
    im = world.render(case.scene, 32)      # the unedited source stands in for an edit
    s = bench.score(case, im, exercises._probe())
    good = {"case": case, "image": im, "success": s["success"], "psnr": s["psnr"]}
    others = [dict(good, case=bench.Case(2, "ground", "snow")), dict(good, case=bench.Case(2, "style", "photo"))]
    for o in others:
        sc = bench.score(o["case"], im, exercises._probe())
        o.update(success=sc["success"], psnr=sc["psnr"])
    assert exercises.check_capstone([good] + others) is True
    wrong = [dict(good, psnr=s["psnr"] + 3)] + others
    assert exercises.check_capstone(wrong) is False and "recomputation" in capsys.readouterr().out
    assert exercises.check_capstone([good, good, good]) is False and "three different" in capsys.readouterr().out
    remove = next(c for c in bench.load_cases() if c.kind == "remove")
    src = world.render(remove.scene, 32)
    assert exercises.check_removal(case, {16: im, 128: src}) is False and "'remove'" in capsys.readouterr().out
    assert exercises.check_removal(remove, {16: src, 128: src}) is False and "same picture" in capsys.readouterr().out
    target = world.render(remove.target, 32)
    assert exercises.check_removal(remove, {16: src, 128: target}) is False and "exact answer" in capsys.readouterr().out


def test_quiz_accepts_the_right_answer_only(capsys):
    for q, (right, section, _) in exercises.QUIZ.items():
        assert exercises.answer(q, right) is True and "correct" in capsys.readouterr().out
        wrong = next(c for c in "abc" if c != right)
        assert exercises.answer(q, wrong) is False and section in capsys.readouterr().out
        assert exercises.answer(q, "") is False and "not answered yet" in capsys.readouterr().out
    with pytest.raises(KeyError):
        exercises.answer("99.9", "a")
