"""The robustness knobs (issue 18): datagen's new render knobs and the on-the-fly degradations of
the input pipeline.  Each knob at 0 leaves the image exactly as it was without the knob; each
knob on changes it in the way it says."""
import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from datagen import fonts, render

FIRST_FIVE = ["NotoSansCJKsc-Regular-subset.otf", "gbsn00lp-subset.ttf", "gkai00mp-subset.ttf",
              "SmileySans-Oblique-subset.ttf", "wqy-zenhei-subset.ttf"]
TEXT = "春眠不觉晓处处闻啼鸟"
NEW_KNOBS = {"edge_prob": 1.0, "wedge_prob": 1.0, "weight_prob": 1.0, "rule_prob": 1.0, "shadow_prob": 1.0,
             "shade_prob": 1.0, "mild_prob": 1.0}


def _render(cfg, font_file=FIRST_FIVE[0], seed=(7, 0, 0), text=TEXT):
  rng = np.random.default_rng(list(seed))
  size = render.draw_size(rng, cfg)
  jpeg, h, w, params = render.render_line(text, fonts.load_font(fonts.FontSpec(str(fonts.bundled_dir() / font_file)), size),
                                          rng, cfg)
  return jpeg, params


def _pixels(jpeg):
  return np.asarray(Image.open(io.BytesIO(jpeg)).convert("L"), np.float32)


def test_first_round_settings_draw_the_first_round_bytes():
  """With every new knob at 0 and the old knobs at the first round's defaults, the renderer draws
  byte for byte what it drew before issue 18 (digest recorded with the code before the change)."""
  cfg = render.RenderConfig(**render.FIRST_ROUND)
  out = []
  for i, name in enumerate(FIRST_FIVE):
    for v in range(3):
      jpeg, _ = _render(cfg, name, (7, i, v))
      out.append(hashlib.sha256(jpeg).hexdigest()[:16])
  assert hashlib.sha256("".join(out).encode()).hexdigest() == \
      "123ebc829dceb02ef81625584418d550bedd4e222a3b40964e6d8f2a2795a617"


@pytest.mark.parametrize("knob", sorted(NEW_KNOBS))
def test_each_new_knob_at_zero_is_the_image_without_it_and_on_changes_it(knob):
  """Against today's defaults with every other new knob on: the knob at 0 gives the image of a
  config without it (the other knobs' draws are not shifted), the knob at 1 changes the image."""
  others = {k: (0.0 if k == "mild_prob" else v) for k, v in NEW_KNOBS.items() if k != knob}
  base = render.RenderConfig(**others, **{knob: 0.0})
  on = render.RenderConfig(**others, **{knob: 1.0})
  changed = 0
  for seed in range(3):
    a, _ = _render(base, seed=(11, seed, 0))
    b, _ = _render(on, seed=(11, seed, 0))
    changed += a != b
  assert changed == 3
  # "Without it" = the knob never consulted: the same image as with its probability at exactly 0
  # from a fresh config, whatever the other knobs' values.
  assert _render(base, seed=(11, 0, 0))[0] == _render(render.RenderConfig(**others, **{knob: 0}), seed=(11, 0, 0))[0]


def test_edge_knob_puts_ink_at_the_image_edge():
  plain = dict(render.FIRST_ROUND, rotate_deg=0.0, shear_max=0.0, perspective=0.0, noise_prob=0.0, blur_prob=0.0,
               lowres_prob=0.0, texture_prob=0.0, gradient_prob=0.0, invert_prob=0.0, jpeg_min=95, jpeg_max=95,
               margin_x_max=0.8)
  gaps = {"wide": [], "edge": []}
  for seed in range(4):
    for name, extra in (("wide", {}), ("edge", {"edge_prob": 1.0})):
      img = _pixels(_render(render.RenderConfig(**dict(plain, **extra)), seed=(3, seed, 0))[0])
      ink = img.min(axis=0) < img.max() - 60  # columns with dark strokes
      # first/last ink column from each side, in font sizes (glyph side bearings are ~0.05-0.1 em)
      gaps[name] += [np.argmax(ink) / img.shape[0], np.argmax(ink[::-1]) / img.shape[0]]
  assert max(gaps["edge"]) < 0.15, gaps
  assert np.mean(gaps["wide"]) > 2 * np.mean(gaps["edge"]), gaps


def test_wedge_knob_blackens_corners_and_weight_knob_changes_ink():
  plain = dict(render.FIRST_ROUND, noise_prob=0.0, texture_prob=0.0, gradient_prob=0.0, invert_prob=0.0,
               blur_prob=0.0, lowres_prob=0.0, jpeg_min=95, jpeg_max=95)
  img = _pixels(_render(render.RenderConfig(**dict(plain, wedge_prob=1.0, wedge_deg=2.5)), seed=(5, 1, 0))[0])
  assert min(img[0, 0], img[0, -1], img[-1, 0], img[-1, -1]) < 40  # a black wedge in some corner
  ink = []
  for delta in (-0.6, 0.6):
    mask = render._stroke_weight(Image.new("L", (60, 30), 0), delta)
    base = Image.new("L", (60, 30), 0)
    base.paste(255, (20, 5, 24, 25))  # a 4-pixel stroke
    ink.append(np.asarray(render._stroke_weight(base, delta), np.float32).sum() / 255)
    assert np.asarray(mask).max() == 0  # no ink stays no ink
  assert ink[0] < 4 * 20 < ink[1]  # thinner < the stroke's 80 pixels of ink < bolder


# ---- the input pipeline's on-the-fly degradations -------------------------------------------
PIPE_KNOBS = {"blur_prob": ("blur_max", 1.2), "lowres_prob": ("lowres_min", 0.4), "noise_prob": ("noise_max", 0.06),
              "jpeg_prob": ("jpeg_min", 20), "pad_prob": ("pad_max", 0.25), "invert_prob": (None, None)}


def _augment(**on):
  import ml_collections
  a = ml_collections.ConfigDict({"width_jitter": 0.0, "contrast": 0.0, "brightness": 0.0})
  for prob, (amount, value) in PIPE_KNOBS.items():
    a[prob] = on.get(prob, 0.0)
    if amount:
      a[amount] = value
  return a


def _preprocess(small_data, augment, n=6, seed=3):
  import tensorflow_datasets as tfds
  from crnn_jax import input_pipeline
  spec = input_pipeline.PipelineSpec(height=32, buckets=(128, 192, 256, 384), stride=8, max_label_length=24,
                                     local_batch_size=4)
  fn = input_pipeline.preprocess_fn(spec, augment, seed=seed)
  ds = input_pipeline.open_split(small_data, "train").take(n)
  return [fn(i, ex)["image"].numpy() for i, ex in enumerate(ds)]


def test_pipeline_knobs_off_equal_no_augmentation(small_data):
  none = _preprocess(small_data, None)
  off = _preprocess(small_data, _augment())
  assert all(np.array_equal(a, b) for a, b in zip(none, off))


@pytest.mark.parametrize("knob", sorted(PIPE_KNOBS))
def test_each_pipeline_knob_changes_images_and_is_reproducible(small_data, knob):
  off = _preprocess(small_data, _augment())
  on = _preprocess(small_data, _augment(**{knob: 1.0}))
  again = _preprocess(small_data, _augment(**{knob: 1.0}))
  assert all(np.array_equal(a, b) for a, b in zip(on, again))  # stateless: same (seed, index), same pixels
  assert sum(not (a.shape == b.shape and np.array_equal(a, b)) for a, b in zip(off, on)) == len(off)
  other_seed = _preprocess(small_data, _augment(**{knob: 1.0}), seed=4)
  if knob == "invert_prob":  # no amount to draw: at probability 1 every seed inverts alike
    other_seed = _preprocess(small_data, _augment(**{knob: 0.5}), seed=4)
  assert any(not (a.shape == b.shape and np.array_equal(a, b)) for a, b in zip(on, other_seed))
  if knob == "pad_prob":  # more margin: the same line comes out narrower at height 32
    assert all(b.shape[1] <= a.shape[1] for a, b in zip(off, on))
  if knob == "invert_prob":  # light on dark: the same pixels, negated (the padding is the mean grey)
    for a, b in zip(off, on):
      np.testing.assert_allclose(b, 1.0 - a, atol=1e-6)


def test_mild_knob_draws_the_first_round_image():
  """mild_prob=1: after its one draw, the image is the first round's renderer's."""
  font = fonts.FontSpec(str(fonts.bundled_dir() / FIRST_FIVE[1]))
  for seed in range(3):
    rng = np.random.default_rng([9, seed])
    size = render.draw_size(rng, render.RenderConfig())
    rng.random()  # the mild knob's own draw
    want = render.render_line(TEXT, fonts.load_font(font, size), rng, render.RenderConfig(**render.FIRST_ROUND))[0]
    got, _ = _render(render.RenderConfig(mild_prob=1.0), FIRST_FIVE[1], (9, seed))
    assert got == want


def test_ramp_factor_grows_over_the_first_examples_then_stays_on():
  import tensorflow as tf
  from crnn_jax import input_pipeline as ip
  ramp = 1000
  f = lambda index, procs=1: float(ip.ramp_factor(tf, tf.constant(index, tf.int64), ramp, procs))  # noqa: E731
  assert f(0) == 0.0 and f(500) == 0.5 and f(1000) == 1.0 and f(5000) == 1.0
  assert f(ip._EPOCH_STRIDE + 3) == 1.0                      # epoch 1 of a 1-process run
  assert f(ip._EPOCH_STRIDE + 250, procs=2) == 0.5           # process 1's epoch-0 element 250 of 2
  assert f(2 * ip._EPOCH_STRIDE + 3, procs=2) == 1.0         # epoch 1 of a 2-process run


def test_ramp_keeps_the_first_examples_clean(small_data):
  aug = _augment(**{k: 1.0 for k in PIPE_KNOBS})
  aug.ramp_steps = 10 ** 6  # a ramp far longer than the few elements read: scale ~0
  clean = _preprocess(small_data, _augment())
  assert all(np.array_equal(a, b) for a, b in zip(clean, _preprocess(small_data, aug)))
