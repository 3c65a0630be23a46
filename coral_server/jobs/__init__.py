"""One-time jobs: worktrees, coding-agent CLIs, prompts."""
