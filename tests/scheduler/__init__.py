"""Tests of the scheduler's planning core: schedules, DST, misfires and backoff."""
