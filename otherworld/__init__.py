"""The other world: an evaluation-only set of text lines drawn by another renderer (Skia), in fonts
kept out of training, clean and harshly degraded by code that shares nothing with datagen's
augmentation.  `otherworld build --data DATA_DIR --out OUT` (otherworld/build.py)."""
