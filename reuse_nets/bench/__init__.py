"""The benchmark: the framework against plain Keras fit, and what a sweep costs."""
