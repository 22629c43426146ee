"""Data from TFDS, execution settings that change float results, and training one config."""
