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

    def select_graphic_rendition(self, *attrs: int, private: bool = False) -> None:
        # `CSI > 4 ; 2 m` (xterm's modifyOtherKeys, sent by the Gemini and Codex CLIs) is a private
        # sequence, not a rendition: pyte passes it here with `private=True`, which its own method
        # does not take.
        if not private:
            super().select_graphic_rendition(*attrs)


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


# -- Gemini CLI -------------------------------------------------------------------------------------
#
# Gemini CLI (0.61) draws a tool's permission prompt in a rounded box, the input box below it:
#
#     │ ? Shell  echo hi > hi.txt                 <- "? <tool>  <command or path>"
#     │ ╭──────────────────╮
#     │ │ echo hi > hi.txt │
#     │ ╰──────────────────╯
#     │ Allow execution of [Shell]?               <- the question
#     │ ● 1. Allow once                           <- "●": the selected option; a digit picks at once
#     │   2. Allow for this session
#     │   3. No, suggest changes (esc)
#
# Busy: "⠴ Thinking... (esc to cancel, 1s)". Ready: the input row " >   Type your message or
# @path/to/file" under a full-width rule. The model's answers are "✦ ..." rows, the user's "> ..."
# rows; a declined (Esc) tool leaves "(i) Request cancelled." (an information sign) under it and the
# CLI waits.

_GEMINI_SELECTED = "\u25cf"  # ●
_GEMINI_PLACEHOLDER = "Type your message or @path/to/file"
_GEMINI_OPTION = re.compile(rf"^(?:{_GEMINI_SELECTED}\s+)?(\d)\.\s+(\S.*?)$")


def _unbox(row: str) -> str:
    """A row without the box edges around it (`│ text │`, nested boxes too), stripped."""
    text = row.strip()
    while text[:1] in ("│", "╭", "╰") or text[-1:] in ("│", "╮", "╯"):
        if text[:1] == "│":
            text = text[1:]
        if text[-1:] == "│":
            text = text[:-1]
        if text[:1] in ("╭", "╰") or text[-1:] in ("╮", "╯"):
            return ""  # a box's top or bottom edge
        text = text.strip()
    return text


def read_gemini_screen(lines: Sequence[str]) -> ScreenReading:
    """What the Gemini CLI's screen shows (see above for how a prompt looks)."""
    rows = [line.rstrip() for line in lines]
    flat = [_unbox(row) for row in rows]
    prompt = _gemini_permission(flat)
    if prompt is not None:
        return ScreenReading(ScreenState.PERMISSION, prompt=prompt)
    rule = _last_index(rows, lambda row: bool(_RULE.match(row.strip())))
    if not rule or not _RULE.match(rows[rule].strip()):
        return ScreenReading(ScreenState.STARTING)
    box = next((row.strip() for row in rows[rule + 1 :] if row.strip().startswith(">")), None)
    if box is None:
        return ScreenReading(ScreenState.STARTING)
    text = box[1:].strip()
    text = "" if text == _GEMINI_PLACEHOLDER else text
    above = [row.strip() for row in rows[:rule] if row.strip()]
    if any("(esc to cancel" in row for row in above[-3:]):
        return ScreenReading(ScreenState.BUSY, input_text=text)
    user = _last_index(above, lambda row: row.startswith("> "))
    if not above or not above[user].startswith("> "):
        return ScreenReading(ScreenState.READY, input_text=text)  # no task given yet
    cancelled = _last_index(above, lambda row: row.startswith("\u2139 Request cancelled"))
    answered = _last_index(above, lambda row: row.startswith("✦"))
    turn_end = None
    if cancelled > user and cancelled > answered:
        turn_end = TurnEnd.INTERRUPTED
    elif answered > user:
        turn_end = TurnEnd.DONE
    return ScreenReading(ScreenState.READY, input_text=text, turn_end=turn_end)


def _gemini_permission(flat: list[str]) -> PermissionPrompt | None:
    options = [i for i, row in enumerate(flat) if _GEMINI_OPTION.match(row)]
    first = next((i for i in reversed(options) if flat[i].startswith(f"{_GEMINI_SELECTED} 1.")), None)
    if first is None:  # the selection may sit on another option: find the list's first one
        first = next((i for i in reversed(options) if _GEMINI_OPTION.match(flat[i]).group(1) == "1"), None)  # type: ignore[union-attr]
    if first is None:
        return None
    choices: list[Choice] = []
    end = first
    while (
        end < len(flat)
        and (match := _GEMINI_OPTION.match(flat[end]))
        and int(match.group(1)) == len(choices) + 1
    ):
        choices.append(Choice(match.group(1), match.group(2)))
        end += 1
    if len(choices) < 2 or not any(_GEMINI_SELECTED in flat[i] for i in range(first, end)):
        return None
    question_at = next((i for i in range(first - 1, -1, -1) if flat[i].endswith("?")), None)
    title_at = next((i for i in range(first - 1, -1, -1) if flat[i].startswith("? ")), None)
    if question_at is None or title_at is None or title_at > question_at:
        return None
    tool, _, subject = flat[title_at][2:].strip().partition(" ")
    yes = next((c.key for c in choices if c.label.startswith("Allow once")), choices[0].key)
    return PermissionPrompt(
        tool=tool,
        title=flat[title_at][2:].strip(),
        subject=subject.strip(),
        question=flat[question_at],
        choices=tuple(choices),
        yes_keys=yes,
        no_keys="\x1b",  # Esc: "No, suggest changes (esc)"
        text=_text(flat[title_at:end]),
    )


# -- Codex CLI --------------------------------------------------------------------------------------
#
# Codex (0.171) asks before a command that wants to leave its sandbox (`on-request` approvals):
#
#       Would you like to run the following command?
#       Reason: Commit hi.txt?
#       $ echo hi > hi.txt && git add -A && git commit -qm hi
#     > 1. Yes, proceed (y)                       <- ">" (U+203A on the screen): the selected option
#       2. Yes, and don't ask again for commands that start with `...` (p)
#       3. No, and tell Codex what to do differently (esc)
#       Press enter to confirm or esc to cancel
#
# "y" accepts, Esc declines. Busy: "• Working (0s • esc to interrupt)". A finished turn ends with
# "Worked for 1s"; a declined one with "■ Conversation interrupted". The user's messages and the
# composer are "> ..." rows (U+203A again; the composer's placeholder changes from run to run).

_CODEX_POINTER = "\u203a"  # single right-pointing angle quotation mark
_CODEX_OPTION = re.compile(rf"^(?:{_CODEX_POINTER}\s+)?(\d)\.\s+(\S.*?)(?:\s+\((\w+)\))?$")


def read_codex_screen(lines: Sequence[str]) -> ScreenReading:
    """What the Codex CLI's screen shows (see above for how a prompt looks)."""
    rows = [line.strip() for line in lines]
    prompt = _codex_permission(rows)
    if prompt is not None:
        return ScreenReading(ScreenState.PERMISSION, prompt=prompt)
    composer = _last_index(rows, lambda row: row.startswith(f"{_CODEX_POINTER} "))
    if not rows or not rows[composer].startswith(f"{_CODEX_POINTER} "):
        return ScreenReading(ScreenState.STARTING)
    above = [row for row in rows[:composer] if row]
    if any("esc to interrupt" in row for row in above[-3:]):
        return ScreenReading(ScreenState.BUSY)
    user = _last_index(above, lambda row: row.startswith(f"{_CODEX_POINTER} "))
    if not above or not above[user].startswith(f"{_CODEX_POINTER} "):
        return ScreenReading(ScreenState.READY)  # no task given yet
    worked = _last_index(above, lambda row: bool(re.search(r"\bWorked for \S", row)))
    stopped = _last_index(above, lambda row: row.startswith("■ Conversation interrupted"))
    turn_end = None
    if stopped > user and stopped > worked:
        turn_end = TurnEnd.INTERRUPTED
    elif worked > user:
        turn_end = TurnEnd.DONE
    # The composer's text cannot be told from its (changing) placeholder: left unknown.
    return ScreenReading(ScreenState.READY, turn_end=turn_end)


def _codex_permission(rows: list[str]) -> PermissionPrompt | None:
    footer = _last_index(rows, lambda row: row.startswith("Press enter to confirm or esc to cancel"))
    if not rows or not rows[footer].startswith("Press enter to confirm"):
        return None
    options = [i for i in range(footer) if _CODEX_OPTION.match(rows[i])]
    first = next((i for i in reversed(options) if _CODEX_OPTION.match(rows[i]).group(1) == "1"), None)  # type: ignore[union-attr]
    if first is None:
        return None
    choices: list[Choice] = []
    yes = no = None
    for i in range(first, footer):
        match = _CODEX_OPTION.match(rows[i])
        if match is None or int(match.group(1)) != len(choices) + 1:
            break
        label, shortcut = match.group(2), match.group(3)
        choices.append(Choice(shortcut if shortcut and shortcut != "esc" else match.group(1), label))
        if yes is None and label.startswith("Yes"):
            yes = choices[-1].key
        if label.startswith("No"):
            no = "\x1b" if shortcut == "esc" else choices[-1].key
    question_at = next(
        (i for i in range(first - 1, -1, -1) if rows[i].endswith("?") and rows[i].startswith("Would")), None
    )
    if question_at is None or len(choices) < 2:
        return None
    command = next((row[2:] for row in rows[question_at:first] if row.startswith("$ ")), None)
    return PermissionPrompt(
        tool="Bash" if command is not None else "Edit",
        title=rows[question_at],
        subject=command or "",
        question=rows[question_at],
        choices=tuple(choices),
        yes_keys=yes or choices[0].key,
        no_keys=no or "\x1b",
        text=_text([row for row in rows[question_at : footer + 1]]),
    )


READERS: dict[str, Callable[[Sequence[str]], ScreenReading]] = {
    "claude": read_claude_screen,
    "gemini": read_gemini_screen,
    "codex": read_codex_screen,
}
