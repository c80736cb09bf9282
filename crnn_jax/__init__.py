"""crnn_jax: CRNN (CNN + BiLSTM + CTC) text-line recognition in JAX/Flax.

The trainer, evaluation and prediction land with the training issue; this package reads only
what `datagen` writes into a DATA_DIR (see README, "The DATA_DIR contract").
"""

__version__ = "0.1.0"
