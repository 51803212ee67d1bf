"""gym_qwen: a TD-MPC2 research platform (agents, environments, distributed jobs)."""
