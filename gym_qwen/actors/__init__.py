"""Ray actors around the platform's algorithms: rollout workers, the learner, episode-farm workers."""
