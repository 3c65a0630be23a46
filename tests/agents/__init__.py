"""Tests of the agent helper library and the bundled agents."""
