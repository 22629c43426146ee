"""Keras layers that reuse a network's inputs (concat, residual, masked, plain) and the models built from them."""
