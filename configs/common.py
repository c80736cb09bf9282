"""Defaults shared by every config; each experiment file overrides what it changes."""
import ml_collections


def base_config():
  c = ml_collections.ConfigDict()
  c.data_dir = "data/poem"          # a DATA_DIR made by `datagen build`
  c.seed = 0

  c.input = ml_collections.ConfigDict()
  c.input.height = 32               # must equal the product of the model's height pools
  # Width buckets (pixels at input.height): a few compiled shapes.  A 20-character line is
  # ~560 px wide; wider images are squeezed into the last bucket.
  c.input.width_buckets = (96, 128, 160, 192, 224, 256, 320, 384, 512, 640)
  c.input.max_label_length = 24
  c.input.shuffle_buffer = 8192
  # True: a damaged TFRecord shard is read up to its damaged record and its rest left out, the
  # shards checked once at the start and the records left out counted in the log (and in
  # WORKDIR/damaged_records.json); False: a damaged record stops the run with one line naming it.
  c.input.skip_damaged_records = False
  c.input.augment = ml_collections.ConfigDict()
  c.input.augment.width_jitter = 0.1    # resized width x U(1 - j, 1 + j)
  c.input.augment.contrast = 0.2
  c.input.augment.brightness = 0.1
  # On-the-fly degradations (input_pipeline.preprocess_fn), on top of datagen's fixed variants so
  # that every epoch sees new ones; each knob at 0 adds no op.  Units: pixels at input.height for
  # blur, fractions of the height for pad, [0, 1] grey for noise.
  c.input.augment.pad_prob = 0.3        # extra top/bottom margin of U(0, pad_max) x height each
  c.input.augment.pad_max = 0.25
  c.input.augment.blur_prob = 0.2       # Gaussian blur, std U(0.3, blur_max)
  c.input.augment.blur_max = 1.2
  c.input.augment.lowres_prob = 0.15    # down to U(lowres_min, 0.9) of the size and back up
  c.input.augment.lowres_min = 0.4
  c.input.augment.noise_prob = 0.3      # additive Gaussian noise, std U(0.01, noise_max)
  c.input.augment.noise_max = 0.06
  c.input.augment.jpeg_prob = 0.25      # JPEG re-encoding at quality U(jpeg_min, 95)
  c.input.augment.jpeg_min = 20
  c.input.augment.invert_prob = 0.0     # light text on a dark ground (1 - x), on top of datagen's
  # The six probabilities above grow from 0 over the first ramp_steps steps (input_pipeline.
  # ramp_factor): harsh images from step 1 kept the default model in CTC's plateau for ~2,000
  # steps (BENCHMARKS.md, "Robust reading").
  c.input.augment.ramp_steps = 3000

  c.model = ml_collections.ConfigDict()
  c.model.conv_features = (64, 128, 256, 256, 512, 512, 512)
  c.model.conv_pools = ((2, 2), (2, 2), (1, 1), (2, 1), (1, 1), (2, 1), (2, 2))
  c.model.lstm_hidden = 256
  c.model.lstm_layers = 2
  c.model.dropout = 0.1
  c.model.shortcut = False          # linear conv -> classifier path beside the LSTMs
  c.model.conv_impl = "xla"         # "xla" | "im2col" | "im2col_first" (model.py, BENCHMARKS.md)
  c.model.pool_impl = "bn_fused"    # "bn_fused" | "reshape" | "reduce_window" (model.py, BENCHMARKS.md)
  c.model.lstm_impl = "custom_vjp"  # "custom_vjp" | "autodiff": the BiLSTM's backward pass (model.py)
  c.model.bn_groups = 1             # batch-norm statistics over train.batch_size / bn_groups examples
  c.model.dtype = "float32"
  # "none" | "standardize": each image to mean 0 / std 1 over its line before the first conv
  # (model.standardize_images), the same in training, evaluation and inference.
  c.model.input_norm = "none"

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.learning_rate = 1e-3
  c.optimizer.end_factor = 0.01
  c.optimizer.warmup_steps = 500
  c.optimizer.decay_steps = 0       # length of the cosine (incl. warm-up); 0: train.num_steps
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.999
  c.optimizer.weight_decay = 1e-4   # conv and LSTM kernels only
  c.optimizer.grad_clip = 5.0

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 32           # global, over all devices and hosts
  c.train.num_steps = 10000
  # > 0: also stop (checkpoint, final evaluation) once the run's training wall time -- compiles,
  # periodic evaluation and earlier resumed processes included -- reaches this many minutes, so a
  # slower machine ends on time at an earlier step.  A run that stops on the budget is reproducible
  # only up to the step it stopped at (train_time.json in the workdir says which).
  c.train.time_budget_minutes = 0.0
  c.train.log_every = 50
  c.train.eval_every = 1000
  c.train.checkpoint_every = 1000
  c.train.keep_checkpoints = 3
  c.train.ema_decay = 0.0           # > 0: keep an EMA of the weights; evaluation and inference use it
  c.train.ctc_impl = "compact"      # "compact" | "optax": how optax.ctc_loss is fed (train.ctc_loss)

  c.eval = ml_collections.ConfigDict()
  c.eval.split = "validation"
  c.eval.batch_size = 64
  c.eval.max_examples = 1000        # per periodic evaluation; crnn-eval reads the whole split
  # More splits for the periodic evaluation, "DATA_DIR:split,DATA_DIR:split" (e.g. the other-world
  # set of `otherworld build`: "data/otherworld:val_degraded"); watched, never used to pick the best.
  c.eval.extra = ""

  # How crnn-eval and crnn-predict read the model's outputs (each overridable by their flags;
  # the periodic evaluation during training always decodes greedily).
  c.decode = ml_collections.ConfigDict()
  c.decode.decoder = "greedy"       # "greedy" | "beam" (CTC prefix beam search, crnn_jax/decode.py)
  c.decode.beam = 8                 # prefixes kept per frame
  c.decode.topk = 8                 # classes per frame the beam may extend with
  c.decode.prune = -12.0            # ... if their log-probability is at least this
  c.decode.lm_order = 3             # character n-gram LM of the training lines (crnn_jax/lm.py)
  c.decode.lm_weight = 0.0          # its weight in the beam's score (0: no LM)
  c.decode.length_bonus = 0.0       # score added per character
  return c
