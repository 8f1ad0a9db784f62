"""The workshop cells of each notebook: (anchor text of the cell they follow, or None for the end; the cells)."""
from add_exercises import exercise, quiz

PLAN = {}

PLAN["00_quickstart.ipynb"] = [
    (None, exercise(r'''
**Exercise 00.C** (capstone) · Your own scene, three edits, measured. Pick a world scene (`world.random_scene(seed)`,
any seed), tune `ut` on it (this re-tunes the model the editor above uses), make three different edits as
`bench.Case(seed, kind, value)` (kinds `"time"`, `"ground"`, `"style"` with values from `world.TIMES`, `world.GROUNDS`,
`world.STYLES`), and report each edit's success and preservation from `bench.score(case, image, probe)`. The check
recomputes your numbers. To stay fast, tune and edit the base stage only (`stages=["base"]`).
''', r'''
from unitune_nb.exercises import check_capstone

report = []   # three dicts {"case": ..., "image": ..., "success": ..., "psnr": ...}
# your code: choose a scene, tune, edit three ways, score each edit
check_capstone(report)
''', r'''
from unitune_nb.exercises import check_capstone

seed = 5
scene = world.random_scene(seed)
my_cases = [bench.Case(seed, kind, next(v for v in values if v != getattr(scene, kind)))
            for kind, values in [("time", world.TIMES), ("ground", world.GROUNDS), ("style", world.STYLES)]]
report = []
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    ut.tune(world.render(scene, 128), stages=["base"], progress=False)
    for c in my_cases:
        image = ut.edit(f"beikkpic {c.prompt}", seed=0, stages=["base"]).image
        s = bench.score(c, image, probe)
        report.append({"case": c, "image": image, "success": s["success"], "psnr": s["psnr"]})
check_capstone(report)
''')),
    (None, quiz("00", [
        "After tuning, what does `beikkpic` stand for? (a) a synonym of *house* (b) the source picture (c) the seed",
        "Why can this notebook say whether an edit is right? (a) the toy world knows the exact edited picture "
        "(b) the probe was trained on these edits (c) the loss says so",
        "At the default late start $t_0 = 0.95$, how much of the source's amplitude is left in $x_{t_0}$? "
        "(a) 95% (b) 5% (c) about 8%",
    ], [
        "UniTune in two steps: tune the model on one picture under a rare token, then sample \"rare token + edit words\".",
        "The engine's defaults (guidance 3, late start 0.95, interpolation 1 against a reconstruction) and what each does.",
        "The seed alone can decide whether an edit changes more than asked: try a few.",
        "The embedded model only knows its toy world; photos need the real models of notebook 07.",
    ])),
]

PLAN["01_cascade_anatomy.ipynb"] = [
    ("already shows the house, the snow and the night sky at step 7", exercise(r'''
**Exercise 01.1** (one line) · Write the line of `PredV.to_x0`: from the base stage's output $\hat v$ (`v`), the
sample $x_t$ (`x_t`) and $\bar\alpha_t$ (`abar`, shaped `[B, 1, 1, 1]`), return the predicted clean image
$\hat x_0 = \sqrt{\bar\alpha_t}\,x_t - \sqrt{1-\bar\alpha_t}\,\hat v$.
''', r'''
from unitune_nb.exercises import check_x0_from_v

def x0_from_v(v, x_t, abar):
    ...   # your code: return the predicted clean image

check_x0_from_v(x0_from_v)
''', r'''
from unitune_nb.exercises import check_x0_from_v

def x0_from_v(v, x_t, abar):
    return abar.sqrt() * x_t - (1 - abar).sqrt() * v

check_x0_from_v(x0_from_v)
''')),
    ("by level 500 the colours are", exercise(r'''
**Exercise 01.2** · Write the noise augmentation: upsample the low-res image `low` to `size` px (bilinear:
`diffusion.upsample`), then noise it to the per-item levels `level` with the given `noise`,
$x_{\text{lr}} = \sqrt{\bar\alpha_\ell}\,\mathrm{up}(x) + \sqrt{1-\bar\alpha_\ell}\,\epsilon$ (`diffusion.q_sample` may help).
''', r'''
from unitune_nb.exercises import check_noise_augmentation

def augment(low, size, level, alphas_cumprod, noise):
    ...   # your code

check_noise_augmentation(augment)
''', r'''
from unitune_nb.diffusion import q_sample, upsample
from unitune_nb.exercises import check_noise_augmentation

def augment(low, size, level, alphas_cumprod, noise):
    return q_sample(alphas_cumprod, upsample(low, size), noise, level)

check_noise_augmentation(augment)
''')),
    (None, quiz("01", [
        "Which stage takes the most time? (a) sr2: the biggest pictures (b) base: the most steps, each two U-Net "
        "calls for guidance (c) the text encoder",
        "What is noise augmentation? (a) noise added to the SR stage's upsampled input, whose level the U-Net is told "
        "(b) dropout in the U-Net (c) noise added to the text embedding",
        "When is a picture's layout decided while denoising? (a) in the last steps (b) in the first few steps "
        "(c) evenly over all steps",
    ], [
        "A cascade: a frozen text encoder, a 32 px base stage, and two super-resolution stages that add detail.",
        "Each step predicts the clean image; the layout settles early, which is what a late start exploits.",
        "SR stages see their input upsampled and noise-augmented, and each stage needs its own adapter.",
        "The guided base stage takes most of the time.",
    ])),
]

PLAN["02_rare_token_tuning.ipynb"] = [
    ('ut.check_rare_token("house")', exercise(r'''
**Exercise 02.1** · Write `is_rare(te, word)`: True when the text encoder has no meaning for `word` yet: it is not a
known word and the tokenizer splits it into more than one piece (`te.is_known_word`, `te.tokens`).
''', r'''
from unitune_nb.exercises import check_rare_token

def is_rare(te, word):
    ...   # your code: return True or False

check_rare_token(is_rare, te)
''', r'''
from unitune_nb.exercises import check_rare_token

def is_rare(te, word):
    return not te.is_known_word(word) and len(te.tokens(word)) > 1

check_rare_token(is_rare, te)
''')),
    ('print(lines(UniTune._tune_stage', exercise(r'''
**Exercise 02.2** (a loop body) · One tuning step of the base stage, as `UniTune._tune_stage` takes it: the stage's
loss on the batch `x0` for the rare token's `text` (`ut.cascade.loss`, stage `"base"`, no low-res image, the given
`generator`), then one step of the optimiser `opt`; return the loss as a number. The check runs your step and the
package's from the same weights, and puts the weights back.
''', r'''
from unitune_nb.exercises import check_tuning_step

def tuning_step(ut, opt, x0, text, generator):
    ...   # your code: the loss, then one optimiser step; return the loss as a float

check_tuning_step(tuning_step, ut)
''', r'''
from unitune_nb.exercises import check_tuning_step

def tuning_step(ut, opt, x0, text, generator):
    loss = ut.cascade.loss("base", x0, None, text, generator)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()

check_tuning_step(tuning_step, ut)
''')),
    (None, quiz("02", [
        "Why not tune on the word `house`? (a) it is too short (b) it already means something: tuning would tie the "
        "picture to that concept (c) the tokenizer cannot split it",
        "64 iterations at 10x the learning rate: (a) fidelity rises and the edit words drown "
        "(b) fidelity falls and edits improve (c) nothing changes",
        "What did tuning sr1 change on this scene? (a) a large gain in detail (b) little: the pretrained sr1 "
        "already infers this world's detail (c) it broke sr1",
    ], [
        "A rare token is a string the encoder has no meaning for; a known word would drag its meaning along.",
        "Tuning is the stage's own training loss on one (image, rare token) pair, one optimiser step at a time.",
        "Fidelity (the token draws the source) and editability (the words still steer) trade against each other.",
        "On the embedded model, the base stage's tuning holds the picture; sr1 changes little.",
    ])),
]

PLAN["03_cfg_vs_prompt_guidance.ipynb"] = [
    ("print(inspect.getsource(guide))", exercise(r'''
**Exercise 03.1** (one line) · Write the CFG combination without calling `guide`: from the U-Net's outputs for the
baseline (`out_baseline`, the empty prompt's) and the prompt (`out_prompt`), at scale `w`.
''', r'''
from unitune_nb.exercises import check_cfg

def cfg(out_baseline, out_prompt, w):
    ...   # your code

check_cfg(cfg)
''', r'''
from unitune_nb.exercises import check_cfg

def cfg(out_baseline, out_prompt, w):
    return out_baseline + w * (out_prompt - out_baseline)

check_cfg(cfg)
''')),
    ("draws the purple house on snow at sunset in", exercise(r'''
**Exercise 03.2** (predict, then run) · Before running anything: at $w = 0.5$, what colour will the probe read
for the house in `"beikkpic a yellow house"` (seed 0, from pure noise): purple, as in the source, or yellow? Write
your prediction, *then* run `edit(f"beikkpic {case.prompt}", guidance_scale=0.5)` and pass its image. The formula
above is all you need to predict.
''', r'''
from unitune_nb.exercises import check_guidance_prediction

prediction = ...   # first: your prediction, "purple" or "yellow"
image = ...        # then: the edit at guidance_scale=0.5
check_guidance_prediction(prediction, image)
''', r'''
from unitune_nb.exercises import check_guidance_prediction

prediction = "purple"   # w < 1 moves towards the baseline, which the tuned model draws as the source
image = edit(f"beikkpic {case.prompt}", guidance_scale=0.5)
check_guidance_prediction(prediction, image)
''')),
    ("So on this model prompt guidance buys little over CFG", exercise(r'''
**Exercise 03.3** · Prompt guidance from a U-Net. `predict(x, prompt)` returns the model's output for a prompt (the
check passes a stand-in). Write `prompt_guided(predict, x, rare_token, words, w)`: the guided output for the prompt
"rare token + words", with prompt guidance's baseline.
''', r'''
from unitune_nb.exercises import check_prompt_guidance

def prompt_guided(predict, x, rare_token, words, w):
    ...   # your code

check_prompt_guidance(prompt_guided)
''', r'''
from unitune_nb.exercises import check_prompt_guidance

def prompt_guided(predict, x, rare_token, words, w):
    baseline = predict(x, rare_token)
    prompt = predict(x, f"{rare_token} {words}")
    return baseline + w * (prompt - baseline)

check_prompt_guidance(prompt_guided)
''')),
    (None, quiz("03", [
        "At $w = 1$, CFG and prompt guidance are: (a) the same computation (b) different: prompt guidance is "
        "stronger (c) different: CFG ignores the prompt",
        "At $w = 0$ with CFG, the tuned model draws: (a) noise (b) the empty prompt's picture, which after tuning is "
        "the source (c) the edit",
        "Raising $w$ from 2 to 8 on this scene: (a) the edit gets ever cleaner (b) it overshoots (a second house), "
        "then breaks down (c) nothing changes",
    ], [
        "Guidance: $\\hat\\epsilon = \\epsilon(b) + w\\,(\\epsilon(c) - \\epsilon(b))$; CFG's baseline is the empty "
        "prompt, prompt guidance's the rare token.",
        "Check that the rare token holds the source before trusting any guidance demo.",
        "The guidance scale trades keeping the source against following the words, in a narrow window.",
        "On a tuned model both baselines mean nearly the same, so prompt guidance buys little over CFG.",
    ])),
]

PLAN["04_late_start_and_interpolation.ipynb"] = [
    ("assert same, \"the sampler's late start should compute q_sample's formula\"", exercise(r'''
**Exercise 04.1** · Write `q_sample` yourself: noise `x0` (`[B, 3, H, W]`) to the timesteps `t` (one per item) with
the given `noise`, where `alphas_cumprod` is $\bar\alpha$: $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon$.
''', r'''
from unitune_nb.exercises import check_q_sample

def my_q_sample(alphas_cumprod, x0, noise, t):
    ...   # your code

check_q_sample(my_q_sample)
''', r'''
from unitune_nb.exercises import check_q_sample

def my_q_sample(alphas_cumprod, x0, noise, t):
    abar = alphas_cumprod[t].reshape(-1, 1, 1, 1)
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

check_q_sample(my_q_sample)
''')),
    ("$t_0 = 0.8$ it starts exactly at $t = 799$", exercise(r'''
**Exercise 04.2** · Write `fraction(alphas_cumprod, t0)`: the source's amplitude left at the late start
$t_0 \in (0, 1]$, as a float. $t_0$ is a fraction of the $T$ = `len(alphas_cumprod)` training steps; $t_0 = 1$ is
the last timestep, $T - 1$. The next figure plots the package's version.
''', r'''
from unitune_nb.exercises import check_signal_fraction

def fraction(alphas_cumprod, t0):
    ...   # your code

check_signal_fraction(fraction)
''', r'''
from unitune_nb.exercises import check_signal_fraction

def fraction(alphas_cumprod, t0):
    T = len(alphas_cumprod)
    t = min(T - 1, max(0, round(t0 * T) - 1))
    return float(alphas_cumprod[t] ** 0.5)

check_signal_fraction(fraction)
''')),
    ("print(inspect.getsource(interpolation.blend))", exercise(r'''
**Exercise 04.3** (one line) · Write the blend without calling `blend`: `result` and `source` are `[B, 3, H, W]`,
`mask` is $m$, `[B, 1, H, W]` (1 = edited), `strength` is $s$.
''', r'''
from unitune_nb.exercises import check_blend

def my_blend(result, source, mask, strength):
    ...   # your code

check_blend(my_blend)
''', r'''
from unitune_nb.exercises import check_blend

def my_blend(result, source, mask, strength):
    return result + strength * (1 - mask) * (source - result)

check_blend(my_blend)
''')),
    ("Both edits below use the defaults (t0 0.95, interpolation 1); only `mask_from` differs.", exercise(r'''
**Exercise 04.4** (a few lines) · Estimate the edit mask from a difference, as `estimate_mask` does without its blur:
the per-pixel colour distance $d$ between `result` and `reference` (`[B, 3, H, W]`; the L2 norm over the 3 channels,
keeping a channel axis: `[B, 1, H, W]`), then a smooth step from 0 at `low` to 1 at `high`:
$u = \mathrm{clamp}\big((d - \text{low}) / (\text{high} - \text{low}), 0, 1\big)$, $m = 3u^2 - 2u^3$.
''', r'''
from unitune_nb.exercises import check_mask

def my_mask(result, reference, low, high):
    ...   # your code

check_mask(my_mask)
''', r'''
from unitune_nb.exercises import check_mask

def my_mask(result, reference, low, high):
    d = (result - reference).pow(2).sum(dim=1, keepdim=True).sqrt()
    u = ((d - low) / (high - low)).clamp(0, 1)
    return u * u * (3 - 2 * u)

check_mask(my_mask)
''')),
    (None, quiz("04", [
        "A late start at $t_0 = 0.8$ keeps: (a) 80% of the source (b) about 31% of the source's amplitude "
        "(c) 20% of the source",
        "Why estimate the mask against a reconstruction rather than the source? (a) it is faster (b) edit and "
        "reconstruction share the model's own errors, so their difference is what the words did (c) the source is "
        "not available",
        "Interpolation strength 0.5 gives: (a) the raw sample (b) half of the source back where the mask is 0: "
        "a ghost (c) the source",
    ], [
        "The late start noises the source with $q(x_{t_0} \\mid x_0)$; on a cosine schedule little of it survives.",
        "Too early a start keeps too much (the edit fails); too late moves things (the moon).",
        "Interpolation blends the source back through a soft mask; against a reconstruction the mask isolates the edit.",
        "A user mask confines an edit; all four combinations are scored against the exact answer.",
    ])),
]

PLAN["06_baselines_and_benchmark.ipynb"] = [
    ('bk = U["by_kind"]', exercise(r'''
**Exercise 06.1** · Choosing t0 from the sweep. Each point of `full["sweep"]` holds a setting (`guidance_scale`, `t0`,
`interpolation`) and its mean `success` and `psnr`. Write `choose(points, min_psnr)`: the point that edits most often
among those keeping at least `min_psnr` dB (on a tie, the one keeping more). Which t0 should a user who needs 28 dB take?
''', r'''
from unitune_nb.exercises import check_choose_setting

def choose(points, min_psnr):
    ...   # your code: return one of the points

check_choose_setting(choose)
''', r'''
from unitune_nb.exercises import check_choose_setting

def choose(points, min_psnr):
    enough = [p for p in points if p["psnr"] >= min_psnr]
    return max(enough, key=lambda p: (p["success"], p["psnr"]))

print("for 28 dB take t0", choose(full["sweep"], 28.0)["t0"])
check_choose_setting(choose)
''')),
    ("Try it yourself: pick a `remove` case", exercise(r'''
**Exercise 06.2** (the removal challenge, a loop) · Take the first `remove` case of `cases`, tune the base stage on
its source with `iters=16` and with the default `iters=64`, edit after each with the engine's defaults, and pass the
images. The check prints what the probe reads for each count: does less tuning let the object go?
''', r'''
from unitune_nb.exercises import check_removal

case = ...     # a remove case
images = {}    # {iterations: the edit's image}
# your loop here
check_removal(case, images)
''', r'''
from unitune_nb.exercises import check_removal

case = next(c for c in cases if c.kind == "remove")
images = {}
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for n in (16, 64):
        ut.tune(world.render(case.scene, 128), stages=["base"], iters=n, progress=False)
        images[n] = ut.edit(f"beikkpic {case.prompt}", seed=0, stages=["base"]).image
ut.reset()
check_removal(case, images)
''')),
    (None, quiz("06", [
        "Which row keeps the most of the source outside the edit? (a) plain text-to-image (b) SDEdit at t0 0.8 "
        "(c) UniTune at its defaults",
        "Why does removing an object fail? (a) the probe cannot count (b) tuning binds the rare token to the "
        "layout, two objects in place (c) the model does not know the word",
        "More tuning iterations give: (a) more success, less preservation (b) more preservation, less success "
        "(c) more of both",
    ], [
        "Every method runs in the same engine and is scored against the world's exact answer: success, preservation, identity.",
        "UniTune keeps the most (25.7 dB) at about two edits in three; no row beats it on both axes.",
        "The defaults come from a sweep's Pareto front; more tuning trades success for preservation.",
        "Removal fails because the tuned token holds the layout.",
    ])),
]

PLAN["07_real_models.ipynb"] = [
    (None, quiz("07", [
        "Without a GPU this notebook runs: (a) the real IF at a low resolution (b) tiny random-weight stand-ins whose "
        "pictures are noise; it checks calls, shapes and tuning (c) nothing",
        "Why encode the prompts once and free T5? (a) T5-XXL's encoder alone is about 9.5 GB in fp16, more than the "
        "U-Nets (b) T5 changes its output each call (c) UniTune forbids new prompts",
        "Why are tuned stages up-cast to fp32? (a) Adafactor on fp16 weights is unstable (b) a CPU cannot run fp16 "
        "(c) to save memory",
    ], [
        "The same UniTune API runs on DeepFloyd IF (a pixel cascade) and Stable Diffusion (one latent stage).",
        "Real models need a GPU: prompts encoded once, T5 freed, fp16 weights tuned in fp32, `reset()` restores them.",
        "The tiny stand-ins test the plumbing on a CPU; only a GPU run shows real edits.",
    ])),
]
