"""Test doubles: fake external services (e.g. an OpenAI-compatible API)."""
