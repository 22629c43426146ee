"""Running a study: the study run and its phases, the trial objective, worker processes, progress."""
