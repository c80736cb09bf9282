"""datagen: renders the THUOCL poem corpus (or a user's own lines) into a TFRecord dataset.

The pipeline, each step also a subcommand of the `datagen` CLI (`datagen --help`):

  corpus  ──► charset (chinese.txt, char_dict/*.json)
          ──► split   (splits/*.txt: train / validation / test by poem line, + balance lines)
          ──► render  (FreeType via Pillow, seeded augmentation, K variants per line)
          ──► tfrecords through tensorflow-datasets (dataset_info.json, shards)
          ──► preview.png, meta.json

`datagen` never imports `crnn_jax`: the trainer reads only what this package writes
(the DATA_DIR contract in README.md).
"""

__version__ = "0.1.0"
