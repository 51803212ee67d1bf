"""TD-MPC2 (Hansen et al. 2023): world model, MPPI planner, replay buffer and agent. No Ray here."""
