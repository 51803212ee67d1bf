"""Speculative execution of TD-MPC2 plans: execution modes, mismatch features, correctors, corrector data."""
