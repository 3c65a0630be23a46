"""Scheduled tasks: their store, their loop, and the pipeline their runs execute."""
