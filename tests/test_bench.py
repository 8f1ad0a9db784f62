"""The edit benchmark, its cases and scoring, and the Textual Inversion baseline."""
import json

import numpy as np
import pytest
import torch

from unitune_nb import bench, world
from unitune_nb.baselines import METHODS, forget_inversion, textual_inversion
from unitune_nb.probe import load_probe
from unitune_nb.tune import EDIT_DEFAULTS, UniTune


@pytest.fixture(scope="module")
def probe():
    return load_probe()


def test_fixed_case_list_is_what_make_cases_builds():
    cases = bench.load_cases()
    assert len(cases) >= 50
    assert cases == bench.make_cases(len(cases))  # the file pins the list; a change to world shows up here
    assert {c.kind for c in cases} == set(world.EDIT_KINDS)
    for c in cases[:12]:
        assert world.render(c.target, 32).tobytes() != world.render(c.scene, 32).tobytes()


def test_scoring_against_the_oracle(probe):
    cases = bench.load_cases()[:12]
    right = [bench.score(c, world.render(c.target, 32), probe) for c in cases]
    unedited = [bench.score(c, world.render(c.scene, 32), probe) for c in cases]
    assert np.mean([r["success"] for r in right]) >= 0.9
    assert np.mean([r["success"] for r in unedited]) <= 0.1
    assert all(r["psnr"] == float("inf") and r["ssim"] == pytest.approx(1.0) for r in right)
    assert all(r["psnr"] < 40 for r, c in zip(unedited, cases) if c.kind in ("time", "style"))


def test_method_settings_follow_each_rows_options():
    d = {"guidance_scale": 7.0, "t0": 0.6, "interpolation": 1.0, "model_guidance": 2.0}
    by = {m.name: bench.method_settings(m, d, "beikkpic") for m in METHODS}
    assert by["UniTune"] == {"guidance_scale": 7.0, "t0": 0.6, "interpolation": 1.0, "baseline_prompt": None,
                             "mask_from": "reconstruction"}
    assert by["UniTune, mask from the source"]["mask_from"] == "source"
    assert by["UniTune, prompt guidance"]["baseline_prompt"] == "beikkpic"
    assert by["DreamBooth-like"]["t0"] == 1.0 and by["DreamBooth-like"]["interpolation"] == 0.0
    # rows drawn from pure noise without tuning sample at the model's own guidance, not the edit one
    assert by["plain text-to-image"]["guidance_scale"] == 2.0
    assert by["Textual Inversion"]["guidance_scale"] == 2.0
    assert by["SDEdit"]["t0"] < 1.0
    with pytest.raises(ValueError, match="model_guidance"):
        bench.method_settings(next(m for m in METHODS if m.name == "plain text-to-image"),
                              {k: v for k, v in d.items() if k != "model_guidance"}, "beikkpic")


def test_sdedit_rows_one_per_start():
    rows = bench.sdedit_rows(METHODS, [0.5, 0.8])
    names = [m.name for m in rows]
    assert "SDEdit" not in names and names.count("SDEdit (t0 0.5)") == 1 and len(rows) == len(METHODS) + 1
    d = {"guidance_scale": 4.0, "t0": 0.9, "interpolation": 1.0, "model_guidance": 2.0}
    assert [bench.method_settings(m, d, "beikkpic")["t0"] for m in rows if m.name.startswith("SDEdit")] == [0.5, 0.8]
    assert bench.sdedit_rows(METHODS, None) == list(METHODS)
    with pytest.raises(ValueError, match="late start"):
        bench.sdedit_rows(METHODS, [1.0])
    # the rows a run scores: the named ones, SDEdit once per start; a wrong name says what there is
    assert [m.name for m in bench.benchmark_rows(["UniTune", "SDEdit"], [0.5, 0.8])] == [
        "UniTune", "SDEdit (t0 0.5)", "SDEdit (t0 0.8)"]
    with pytest.raises(ValueError, match="choose from"):
        bench.benchmark_rows(["SDEdit at 0.5"])


def test_pareto_figure_draws_rows_at_several_starts_as_one_curve():
    st = lambda s, p: {"success": (s, 0.01), "psnr": (p, 0.2)}  # noqa: E731
    summary = {"UniTune": st(0.7, 25.0), "SDEdit (t0 0.5)": st(0.3, 24.0), "SDEdit (t0 0.9)": st(0.7, 15.0),
               "SDEdit (t0 0.7)": st(0.5, 19.0)}
    ax = bench.pareto_figure([], summary).axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert [x for x in labels if x.startswith("SDEdit")] == ["SDEdit (t0 0.5-0.9)"]
    curve = next(line for line in ax.get_lines() if line.get_label() == "SDEdit (t0 0.5-0.9)")
    assert list(curve.get_xdata()) == [24.0, 19.0, 15.0]  # ordered by start
    # weight scales end at their row (scale 1); iteration counts of each tuning setting are one curve too
    summary["UniTune (scale 0.5)"] = st(0.8, 20.0)
    iters = [{"iters": k, "tune": "LoRA r16", "success": (s_, 0.0), "psnr": (p_, 0.0)}
             for k, s_, p_ in ((128, 0.6, 27.0), (32, 0.75, 21.0))]
    ax = bench.pareto_figure([], summary, iters=iters).axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["UniTune (scale 0.5-1)"].get_xdata()) == [20.0, 25.0]
    assert list(lines["UniTune, LoRA r16 (iterations 32-128)"].get_xdata()) == [21.0, 27.0]
    assert "UniTune settings (sweep)" not in [t.get_text() for t in ax.get_legend().get_texts()]  # no sweep given


def test_sweep_front_and_default():
    recs = [{"method": "sweep", "guidance_scale": g, "t0": t, "interpolation": 0.0, "success": s, "psnr": p,
             "case": 0, "kind": "time", "seed": 0, "edit_s": 0.1}
            for g, t, s, p in [(2, 1.0, 1.0, 18.0), (2, 0.7, 0.9, 27.0), (4, 0.7, 0.8, 26.0), (4, 0.5, 0.2, 35.0)]]
    pts = bench.summarize_sweep(recs)
    assert [p["front"] for p in pts] == [True, True, False, True]
    assert bench.choose_default(pts)["t0"] == 0.7  # best success among those keeping >= 25 dB
    # a second seed: the point is the mean over both, with their spread
    recs2 = recs + [dict(r, seed=1, success=1.0 - r["success"], psnr=r["psnr"] + 2) for r in recs]
    pts2 = bench.summarize_sweep(recs2)
    assert pts2[1]["seeds"] == 2 and pts2[1]["n"] == 2
    assert abs(pts2[1]["success"] - 0.5) < 1e-9 and abs(pts2[1]["success_std"] - 0.4) < 1e-9
    assert abs(pts2[1]["psnr"] - 28.0) < 1e-9 and abs(pts2[1]["psnr_std"] - 1.0) < 1e-9


def test_encode_with_own_embeddings_matches_plain_encoding(text_encoder):
    word = "beikkpic"
    vec = text_encoder.word_embeddings(word)
    a = text_encoder.encode_with([f"{word} at night", "a red car"], word, vec)
    b = text_encoder([f"{word} at night", "a red car"])
    assert torch.allclose(a.states, b.states, atol=1e-5) and torch.allclose(a.pooled, b.pooled, atol=1e-5)
    with pytest.raises(ValueError, match="word pieces"):
        text_encoder.set_learned(word, torch.zeros(1, 7))


def test_textual_inversion_learns_only_the_token(cascade, text_encoder):
    ut = UniTune(cascade)
    before = {n: p.detach().clone() for n, p in cascade.unets["base"].named_parameters()}
    plain = text_encoder("beikkpic at night").pooled.clone()
    other = text_encoder("a red car at night").pooled.clone()
    try:
        losses = textual_inversion(ut, world.render(world.random_scene(3), 128), iters=6)
        assert len(losses) == 6 and all(np.isfinite(losses))
        assert not torch.allclose(text_encoder("beikkpic at night").pooled, plain)
        assert torch.equal(text_encoder("a red car at night").pooled, other)
        assert all(torch.equal(p, before[n]) for n, p in cascade.unets["base"].named_parameters())
        assert not ut.tuned
    finally:
        forget_inversion(ut)
    assert torch.allclose(text_encoder("beikkpic at night").pooled, plain, atol=1e-5)  # float noise only


def test_bench_edit_quick_cli(tmp_path, capsys):
    from unitune_nb.cli import main

    assert main(["bench-edit", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for m in METHODS:
        assert f"| {m.name} |" in out
    data = json.loads((tmp_path / "bench_edit.json").read_text())
    assert data["cases"] == 4 and len(data["records"]) == 4 * len(METHODS)
    assert (tmp_path / "pareto.png").stat().st_size > 1000
    psnr = {m.name: np.mean([r["psnr"] for r in data["records"] if r["method"] == m.name]) for m in METHODS}
    # starting late from the source and blending it back keeps more of it than sampling from noise, and
    # the blend (interpolation) adds preservation to the same sample
    assert psnr["UniTune"] > psnr["plain text-to-image"]
    assert psnr["UniTune"] > psnr["UniTune, no interpolation"] + 1


def test_bench_edit_cli_sdedit_at_several_starts(tmp_path, capsys):
    from unitune_nb.cli import main

    assert main(["bench-edit", "--quick", "--methods", "SDEdit", "--sdedit-t0", "0.5,0.8", "--out", str(tmp_path)]) == 0
    assert "| SDEdit (t0 0.5) |" in capsys.readouterr().out
    recs = json.loads((tmp_path / "bench_edit.json").read_text())["records"]
    assert sorted({r["method"] for r in recs}) == ["SDEdit (t0 0.5)", "SDEdit (t0 0.8)"] and len(recs) == 8
    psnr = {m: np.mean([r["psnr"] for r in recs if r["method"] == m]) for m in ("SDEdit (t0 0.5)", "SDEdit (t0 0.8)")}
    assert psnr["SDEdit (t0 0.5)"] > psnr["SDEdit (t0 0.8)"]  # a later start keeps more of the source


def test_merge_reports_split_runs_as_one(tmp_path, capsys):
    from unitune_nb.cli import main

    def rec(case, method, seed, success, psnr, **kw):
        return {"case": case, "kind": "time", "method": method, "seed": seed, "success": success, "psnr": psnr,
                "ssim": 0.5, "identity": 10.0, "prep_s": 1.0, "edit_s": 0.1, **kw}

    halves = [[rec(c, "UniTune", s, 1.0, 30.0) for c in range(2) for s in range(2)],
              [rec(c, "UniTune", s, 0.0, 20.0) for c in range(2) for s in range(2)]
              + [rec(0, "sweep", 0, 1.0, 26.0, guidance_scale=7.0, t0=0.6, interpolation=1.0)]]
    for name, recs in zip("ab", halves):
        (tmp_path / name).mkdir()
        (tmp_path / name / "bench_edit.json").write_text(json.dumps(
            {"cases": 2, "seeds": 2, "iters": 64, "ti_iters": 64, "full": False, "threads": 1, "records": recs}))
    records, meta = bench.merge_edit_runs([tmp_path / "a", tmp_path / "b"])
    assert meta["cases"] == 4 and sorted({r["case"] for r in records}) == [0, 1, 2, 3]
    out = tmp_path / "merged"
    assert main(["bench-edit", "--merge", f"{tmp_path / 'a'},{tmp_path / 'b'}", "--out", str(out)]) == 0
    summary = json.loads((out / "bench_edit_summary.json").read_text())
    assert summary["cases"] == 4 and summary["summary"]["UniTune"]["success"][0] == 0.5
    assert summary["summary"]["UniTune"]["psnr"][0] == 25.0 and summary["chosen"]["psnr"] == 26.0
    assert "default chosen on the front" in capsys.readouterr().out and (out / "pareto.png").is_file()
    other = json.loads((tmp_path / "b" / "bench_edit.json").read_text())
    (tmp_path / "b" / "bench_edit.json").write_text(json.dumps(dict(other, iters=128)))
    with pytest.raises(ValueError, match="other settings"):
        bench.merge_edit_runs([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(FileNotFoundError, match="bench-edit --out"):
        bench.merge_edit_runs([tmp_path / "nothing"])


def test_iteration_sweep_reads_one_tuning_run_at_each_count():
    cases = bench.load_cases()[:1]
    recs = list(bench.bench_edit_steps(cases, seeds=2, iters=6, methods=["UniTune"], sweep_iters=[3, 6],
                                       sweep={"t0": [EDIT_DEFAULTS["t0"]]}, sweep_seeds=2))
    its = [r for r in recs if r["method"] == "iters"]
    assert sorted({(r["iters"], r["seed"]) for r in its}) == [(3, 0), (3, 1), (6, 0), (6, 1)]
    # the read at 6 iterations is the same model, seed and settings as the UniTune row tuned for 6
    row = {r["seed"]: r for r in recs if r["method"] == "UniTune"}
    for r in its:
        if r["iters"] == 6:
            assert r["psnr"] == pytest.approx(row[r["seed"]]["psnr"]) and r["success"] == row[r["seed"]]["success"]
    # the swept setting equal to the defaults, at both seeds, is the UniTune row again
    sw = {r["seed"]: r for r in recs if r["method"] == "sweep"}
    assert sorted(sw) == [0, 1] and all(sw[k]["psnr"] == pytest.approx(row[k]["psnr"]) for k in (0, 1))
    t3, t6 = ({r["prep_s"] for r in its if r["iters"] == k}.pop() for k in (3, 6))
    assert 0 < t3 < t6
    summary = bench.summarize_iters(recs)
    assert [s["iters"] for s in summary] == [3, 6] and all(s["n"] == 2 for s in summary)
    assert "iters" not in {name for name in bench.summarize(recs)}  # the rows' table keeps to the rows
    assert len(bench.iters_figure(summary).axes) == 2
    with pytest.raises(ValueError, match="base stage only"):
        next(bench.bench_edit_steps(cases, full=True, sweep_iters=[3]))


def test_bench_rows_of_another_tuning_method_and_weight_scales(tmp_path, capsys):
    """--tune-method / --lora-rank / --tune-lr name the tuned rows after the tuning; --sweep-scale adds each row at
    those weight scales; --combine puts runs of the same cases with other rows into one table."""
    from unitune_nb.cli import main

    assert bench.tune_label({"method": "lora", "lora_rank": 16, "lr": 1e-3}) == "LoRA r16, lr 0.001"
    assert bench.tune_label(None) == "" and bench.tune_label({"method": "attention"}) == "attention only"
    cases = bench.load_cases()[:1]
    recs = list(bench.bench_edit_steps(cases, seeds=1, iters=4, methods=["UniTune", "SDEdit"],
                                       tune={"method": "lora", "lora_rank": 4, "lr": 1e-3}, sweep_scale=[0.0]))
    by = {r["method"]: r for r in recs}
    assert set(by) == {"UniTune, LoRA r4, lr 0.001", "UniTune, LoRA r4, lr 0.001 (scale 0)", "SDEdit"}
    assert by["UniTune, LoRA r4, lr 0.001 (scale 0)"]["weight_scale"] == 0.0
    with pytest.raises(ValueError, match="weight_scale"):
        next(bench.bench_edit_steps(cases, sweep_scale=[2.0]))
    with pytest.raises(ValueError, match="lora_rank"):
        next(bench.bench_edit_steps(cases, tune={"method": "lora", "lora_rank": 0}))
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["bench-edit", "--cases", "1", "--seeds", "1", "--iters", "2", "--methods", "UniTune",
                 "--out", str(a)]) == 0
    assert main(["bench-edit", "--cases", "1", "--seeds", "1", "--iters", "2", "--methods", "UniTune", "--tune-method",
                 "attention", "--sweep-scale", "0.5", "--out", str(b)]) == 0
    capsys.readouterr()
    assert main(["bench-edit", "--combine", f"{a},{b}", "--out", str(tmp_path / "both")]) == 0
    out = capsys.readouterr().out
    assert "| UniTune |" in out and "| UniTune, attention only |" in out and "| UniTune, attention only (scale 0.5) |" in out
    both = json.loads((tmp_path / "both" / "bench_edit_summary.json").read_text())["summary"]
    curves = bench.scale_curves(both)
    assert list(curves) == ["UniTune, attention only"] and [x for x, _ in curves["UniTune, attention only"]] == [0.5, 1.0]
    assert (tmp_path / "both" / "scale.png").is_file()
    with pytest.raises(ValueError, match="earlier folder holds"):
        bench.combine_edit_runs([a, a])


def test_bench_speed_times_a_lora_tune_and_reports_its_small_file():
    r = bench.bench_speed(iters=2, repeats=1, method="lora", lora_rank=2)
    assert r["tune_method"] == "lora" and r["lora_rank"] == 2 and r["tune_lr"] == 1e-3  # LoRA's own default lr
    assert 0 < r["trained_params"] < 200_000 and 0 < r["tuned_file_mb"] < 1.0
    assert r["tune_base_s"] > 0 and r["tune_sr1_s"] > 0 and r["peak_rss_mb"] > 0
    assert "method lora rank 2" in bench.format_speed(r)
