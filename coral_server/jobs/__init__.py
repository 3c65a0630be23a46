"""One-time jobs: coding-agent CLIs (how to run each, what its terminal asks) on a prompt in a worktree."""
