"""reuse-nets: how should a deep network reuse its inputs?

Importing the package registers its Keras layers for `safe_mode=True` loading.
"""

from reuse_nets import layers  # noqa: F401  (registers serializable layers)

__version__ = "0.1.0"
