"""Online TD-MPC2 training: a whole run (run), the acting and learning loop with its backends (loop), batched
rollout episodes for workers (rollouts), teachers shipped from finished runs (teachers) and learning curves
(curves)."""
