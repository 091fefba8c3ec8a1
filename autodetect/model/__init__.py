"""Make/model recognition: split, build, train, evaluate, export and serve a CNN.

This package file imports nothing on purpose. Import what you need from its modules:

- ``split``, ``evaluate``, ``runtime``, ``bundle``, ``errors``, ``provider`` (the serving model a
  worker holds): TensorFlow-free (numpy, Pillow); safe in the serving and download workers.
- ``backbones``, ``train`` (with ``train_config``, ``train_data``, ``train_callbacks``, ``network``),
  ``export``: import TensorFlow/Keras; only the training job uses them.

Nothing here imports Celery or the database: the pipeline wires these functions in.
"""
