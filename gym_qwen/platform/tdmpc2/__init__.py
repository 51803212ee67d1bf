"""TD-MPC2 (Hansen et al. 2023): world model, MPPI planner, replay buffer, agent, and the checkpoint format that builds
an agent again."""
