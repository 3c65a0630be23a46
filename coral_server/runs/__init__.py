"""Runs: one execution of a spec (a coding-agent job, later a session or a webhook), one state machine."""
