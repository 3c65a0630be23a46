"""Tests of webhook signing, verification, secrets and the durable delivery queue."""
