"""Echo agent: replies to each mention with PREFIX + text, mentioning the sender.

Options (environment variables set by the Coral server from the manifest):
- PREFIX (default "echo: "): put before the echoed text; a text that already starts with
  PREFIX is never echoed, so two echo agents cannot loop on each other.
- MAX_REPLIES (default 1000): after that many replies the agent sends nothing more but
  stays connected, still consuming its mentions, until the session ends or it gets SIGTERM
  (then it exits 0).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from coral_server.agent import CoralAgent


def main() -> None:
    prefix = os.environ.get("PREFIX", "echo: ")
    try:
        max_replies = int(os.environ.get("MAX_REPLIES", "1000"))
    except ValueError:
        print(f"error: MAX_REPLIES must be an integer, got {os.environ['MAX_REPLIES']!r}", file=sys.stderr)
        raise SystemExit(2) from None
    replies = 0

    async def on_mention(agent: CoralAgent, message: dict[str, Any]) -> None:
        nonlocal replies
        text = str(message.get("text", ""))
        sender = str(message.get("senderName", ""))
        if replies >= max_replies or text.startswith(prefix) or sender == agent.name:
            return
        replies += 1
        await agent.send_message(message["threadId"], prefix + text, [sender])
        print(f"replied to {sender} in thread {message['threadId']} ({replies}/{max_replies})", flush=True)

    async def on_start(agent: CoralAgent) -> None:
        print(f"{agent.name} connected; echoing mentions with prefix {prefix!r}", flush=True)

    CoralAgent.run_forever(on_mention, on_start=on_start)


if __name__ == "__main__":
    main()
