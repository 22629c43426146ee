"""reuse-nets: how should a deep network reuse its inputs?

The package root stays light (no TensorFlow import) so that study validation and
command-line errors are fast. `import reuse_nets.nn.layers` registers the Keras
layers for `keras.saving.load_model(path, safe_mode=True)`.
"""

__version__ = "0.1.0"
