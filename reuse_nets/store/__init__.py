"""Where results live: MLflow trial and study runs, the Optuna storage and its slots, provenance, logged models."""
