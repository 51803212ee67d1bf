"""Ray only: actors around the platform's objects (rollout workers, the learner, episode farms) and the drivers that
run them (training backend, evaluators, corrector collection, sweeps on Tune)."""
