"""Re-running a logged run, or a sample of a study's runs, and saying whether the numbers agree."""
