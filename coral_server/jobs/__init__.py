"""One-time jobs: worktrees, coding-agent CLIs (how to run each, what its terminal asks), the executor."""
