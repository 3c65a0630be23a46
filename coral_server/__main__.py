"""`python -m coral_server` runs the server."""

from coral_server.cli import main

main()
