"""What a coding-agent CLI shows on its terminal: the rendered screen, permission prompts, dialogs, idleness.

A `TerminalScreen` (pyte, a VT100 emulator) turns the CLI's raw output into the rows a human sees;
`read_screen(agent_type, rows)` says what those rows mean: a permission prompt (what is asked, which
keys answer yes or no), a first-run dialog, the agent busy, or ready for input. Pure: no I/O.

Claude Code (2.1) draws a permission prompt at the bottom of the screen, under a full-width rule:

    ────────────────────────────────
     Bash command                        <- or "Create file", "Overwrite file", "Edit file", ...

       git add -A && git commit -m x     <- the command (or, for files, the path and a diff)
       Commit the change                 <- the tool call's description

     Do you want to proceed?
     > 1. Yes                            <- ">" is "\u276f" on the screen: the selected option
       2. Yes, and don't ask again for similar commands in /repo
       3. No

     Esc to cancel · Tab to amend · ctrl+e to explain

A digit picks an option at once (no Enter); Esc declines. After a decline the CLI stops and waits
for the user, under the declined call: "Interrupted · What should Claude do instead?" (Esc) or
"User rejected write to hello.txt" (the No option).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import pyte


class _Screen(pyte.Screen):  # type: ignore[misc]
    def __init__(self, cols: int, rows: int, answer: Callable[[str], None] | None) -> None:
        super().__init__(cols, rows)
        self._answer = answer

    def write_process_input(self, data: str) -> None:
        if self._answer is not None:
            self._answer(data)


class TerminalScreen:
    """A VT100 screen (pyte) fed with a CLI's raw terminal output; `lines()` is what a human sees.

    `answer`, when given, receives the replies a real terminal sends back to queries in the output
    (cursor position, device status), to be written to the program's input.
    """

    def __init__(self, cols: int = 120, rows: int = 40, answer: Callable[[str], None] | None = None) -> None:
        self._screen = _Screen(cols, rows, answer)
        self._stream = pyte.ByteStream(self._screen)
        self._held = b""

    def feed(self, data: bytes) -> None:
        data = self._held + data
        # pyte draws the final byte of CSI sequences with a `<` or `=` marker (kitty keyboard protocol,
        # which Ink-based CLIs send) as text; give them the `?` marker it skips. A sequence split
        # between two reads waits for the rest.
        cut = len(data) - (1 if data.endswith(b"\x1b") else 2 if data.endswith(b"\x1b[") else 0)
        data, self._held = data[:cut], data[cut:]
        self._stream.feed(data.replace(b"\x1b[<", b"\x1b[?").replace(b"\x1b[=", b"\x1b[?"))

    def lines(self) -> list[str]:
        """The screen's rows, as text."""
        return list(self._screen.display)

    def resize(self, cols: int, rows: int) -> None:
        self._screen.resize(rows, cols)


# -- what a screen means ----------------------------------------------------------------------------


class ScreenState(StrEnum):
    STARTING = "starting"  # nothing recognisable yet (or a screen this reader does not know)
    DIALOG = "dialog"  # a first-run dialog (trust this folder, use this API key, ...)
    PERMISSION = "permission"  # a tool waits for the user's yes or no
    BUSY = "busy"  # the agent works (model or tool running)
    READY = "ready"  # the input box waits for the user


class TurnEnd(StrEnum):
    DONE = "done"  # the agent finished its answer
    INTERRUPTED = "interrupted"  # a declined tool (or Esc) stopped it: it waits for instructions


@dataclass(frozen=True, slots=True)
class Choice:
    key: str  # what to type to pick it
    label: str


@dataclass(frozen=True, slots=True)
class PermissionPrompt:
    """A tool waiting for permission, as drawn on the screen."""

    tool: str  # "Bash", "Write", "Edit", or the prompt's title when the tool is not known
    title: str  # "Bash command", "Create file", ...
    subject: str  # the command, or the file's path (as shown; long commands are rewrapped with spaces)
    question: str  # "Do you want to proceed?"
    choices: tuple[Choice, ...]
    yes_keys: str  # keys that answer yes, this once
    no_keys: str  # keys that decline
    text: str  # the whole prompt as shown, for the record

    def summary(self) -> str:
        """One line for logs and the run's record of auto-accepts: `Bash: git commit -m x`."""
        return f"{self.tool}: {' '.join(self.subject.split())}"


@dataclass(frozen=True, slots=True)
class Dialog:
    """A dialog that is not a tool's permission (first-run questions, warnings, errors)."""

    kind: str  # trust_folder, api_key, bypass_permissions, unreachable, unknown
    text: str
    choices: tuple[Choice, ...]
    accept_keys: str | None  # keys that go on (None: nothing to answer, e.g. an error screen)


@dataclass(frozen=True, slots=True)
class ScreenReading:
    state: ScreenState
    prompt: PermissionPrompt | None = None
    dialog: Dialog | None = None
    input_text: str | None = None  # what is typed in the input box (READY and BUSY)
    turn_end: TurnEnd | None = None  # how the last turn ended, when the screen says (READY)

    @property
    def idle(self) -> bool:
        """Ready with an empty input box: text just submitted still shows until the CLI takes it."""
        return self.state is ScreenState.READY and not self.input_text


def read_screen(agent_type: str, lines: Sequence[str]) -> ScreenReading:
    """What an agent type's screen shows (STARTING for agent types without a reader)."""
    reader = READERS.get(agent_type)
    return reader(lines) if reader else ScreenReading(ScreenState.STARTING)


# -- Claude Code ------------------------------------------------------------------------------------

POINTER = "\u276f"  # heavy right-pointing angle: the selected option, and the input box's prompt
_RULE = re.compile(r"^─{20,}$")
_OPTION = re.compile(rf"^\s*(?:{POINTER}\s+)?(\d)\.\s+(\S.*?)\s*$")
_SPINNER = re.compile(r"^[·✢✳✶✻✽*]\s+\S.*…")  # "✽ Pouncing…", "· Recombobulating… (esc to interrupt)"
_DONE = re.compile(r"^✻\s+\S+(?:\s\S+)?\s+for\s+\d")  # "✻ Worked for 4s", "✻ Sautéed for 1m 2s"
# Under the last tool call after a decline: "⎿  Interrupted · What should Claude do instead?" (Esc),
# "⎿  User rejected write to hello.txt" (No).
_REFUSED = re.compile(r"^⎿\s+(Interrupted · What should Claude do instead\?|User rejected )")
_TOOLS_BY_TITLE = {
    "Bash command": "Bash",
    "Create file": "Write",
    "Overwrite file": "Write",
    "Edit file": "Edit",
    "Edit notebook": "NotebookEdit",
    "Fetch": "WebFetch",
}
_DIALOGS = (  # (kind, words that identify it, the label of the option that goes on)
    ("trust_folder", "Is this a project you created or one you trust?", "Yes, I trust this folder"),
    ("api_key", "Do you want to use this API key?", "Yes"),
    ("bypass_permissions", "Bypass Permissions mode", "Yes, I accept"),
    ("unreachable", "Unable to connect to Anthropic services", None),
)


def read_claude_screen(lines: Sequence[str]) -> ScreenReading:
    """What Claude Code's screen shows (see the module docstring for how a prompt looks)."""
    rows = [line.rstrip() for line in lines]
    for kind, words, accept in _DIALOGS:
        if any(words in row for row in rows):
            found = _option_list(rows)
            choices = found[2] if found else ()
            keys = next((c.key for c in choices if c.label == accept), None) if accept else None
            return ScreenReading(ScreenState.DIALOG, dialog=Dialog(kind, _text(rows), choices, keys))
    prompt = _claude_permission(rows)
    if prompt is not None:
        return ScreenReading(ScreenState.PERMISSION, prompt=prompt)
    box = _input_box(rows)
    if box is None:
        return ScreenReading(ScreenState.STARTING)
    top, bottom, text = box
    status = next((row for row in rows[bottom + 1 :] if row.strip()), "")
    above = [row.strip() for row in rows[:top] if row.strip()]
    if "esc to interrupt" in status or any(_SPINNER.match(row) for row in above[-3:]):
        return ScreenReading(ScreenState.BUSY, input_text=text)
    turn_end = None
    last_block = above[_last_index(above, lambda row: row.startswith(("●", POINTER))) :]
    if above and _DONE.match(above[-1]):
        turn_end = TurnEnd.DONE
    elif any(_REFUSED.search(row) for row in last_block):
        turn_end = TurnEnd.INTERRUPTED
    return ScreenReading(ScreenState.READY, input_text=text, turn_end=turn_end)


def _claude_permission(rows: list[str]) -> PermissionPrompt | None:
    # Anchor on the last option list with a selected option (POINTER) and "Esc to cancel" under it, then
    # look up for the question and the rule the prompt starts under.
    found = _option_list(rows)
    if found is None:
        return None
    first, end, choices = found
    footer = next((row for row in rows[end:] if row.strip()), "")
    if "Esc to cancel" not in footer:
        return None
    question_at = next((i for i in range(first - 1, -1, -1) if rows[i].strip()), None)
    if question_at is None or not rows[question_at].strip().endswith("?"):
        return None
    rule = next((i for i in range(question_at - 1, -1, -1) if _RULE.match(rows[i])), None)
    body = rows[(rule + 1 if rule is not None else 0) : question_at]
    title_at = next((i for i, row in enumerate(body) if row.strip()), None)
    title = body[title_at].strip() if title_at is not None else ""
    tool = _TOOLS_BY_TITLE.get(title) or _last_tool_call(rows[: rule or 0]) or title
    subject = _subject(body[title_at + 1 :] if title_at is not None else [], tool)
    yes = next((c.key for c in choices if c.label == "Yes"), choices[0].key)
    no = next((c.key for c in choices if c.label == "No" or c.label.startswith("No,")), "\x1b")
    return PermissionPrompt(
        tool=tool,
        title=title,
        subject=subject,
        question=rows[question_at].strip(),
        choices=choices,
        yes_keys=yes,
        no_keys=no,
        text=_text(rows[rule if rule is not None else 0 : end + 2]),
    )


def _subject(body: list[str], tool: str) -> str:
    """The command (indented block, without its description line) or the file path (first line)."""
    content = [row for row in body if row.strip()]
    if not content:
        return ""
    if tool != "Bash":
        return content[0].strip()
    indent = len(content[0]) - len(content[0].lstrip())
    block: list[str] = []
    for row in content:  # the indented block ends at the reason line ("This command requires approval")
        if len(row) - len(row.lstrip()) < indent:
            break
        block.append(row.strip())
    if len(block) > 1:
        block = block[:-1]  # the last line is the tool call's description
    return " ".join(block)


def _last_tool_call(rows: list[str]) -> str | None:
    """The tool of the transcript's last call above the prompt (`● Write(hello.txt)`)."""
    for row in reversed(rows):
        match = re.match(r"^●\s+(\w+)\(", row)
        if match:
            return {"Update": "Edit"}.get(match.group(1), match.group(1))
    return None


def _option_list(rows: list[str]) -> tuple[int, int, tuple[Choice, ...]] | None:
    """The last numbered option list (1., 2., ...) with a selected option: (first row, row after it,
    the choices); a label too long for one row continues, indented, on the next."""
    found = None
    for start, row in enumerate(rows):
        match = _OPTION.match(row)
        if not match or match.group(1) != "1":
            continue
        choices = [Choice("1", match.group(2))]
        label_column = row.index(match.group(2))
        selected = POINTER in row
        end = start + 1
        while end < len(rows):
            match = _OPTION.match(rows[end])
            if match and int(match.group(1)) == len(choices) + 1:
                choices.append(Choice(match.group(1), match.group(2)))
                selected = selected or POINTER in rows[end]
            elif rows[end].strip() and rows[end][:label_column].isspace() and not match:
                last = choices[-1]
                choices[-1] = Choice(last.key, f"{last.label} {rows[end].strip()}")
            else:
                break
            end += 1
        if selected and len(choices) >= 2:
            found = (start, end, tuple(choices))
    return found


def _input_box(rows: list[str]) -> tuple[int, int, str] | None:
    """The last input box: (row of its top rule, row of its bottom rule, the text typed in it)."""
    for bottom in range(len(rows) - 1, 0, -1):
        if not _RULE.match(rows[bottom]):
            continue
        top = next((i for i in range(bottom - 1, -1, -1) if _RULE.match(rows[i])), None)
        if top is None or top == bottom - 1 or not rows[top + 1].startswith(POINTER):
            continue
        text = "\n".join(row[2:].rstrip() for row in rows[top + 1 : bottom]).strip()
        return top, bottom, text
    return None


def _last_index(rows: Sequence[str], test: Callable[[str], bool]) -> int:
    return next((i for i in range(len(rows) - 1, -1, -1) if test(rows[i])), 0)


def _text(rows: Sequence[str]) -> str:
    return "\n".join(row.rstrip() for row in rows).strip("\n")


READERS: dict[str, Callable[[Sequence[str]], ScreenReading]] = {"claude": read_claude_screen}
