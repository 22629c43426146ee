"""What to run, as validated data: a trial's config, a study spec and its file, and the pure plan of a study."""
