"""Speculative execution of TD-MPC2 plans and every evaluation run through it: execution modes, the executor, mismatch
features, correctors, corrector data and their distillation."""
