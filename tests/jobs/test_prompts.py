"""The screen recogniser over real Claude Code screens (tests/fixtures/screens/claude, from the CLI)."""

from __future__ import annotations

from pathlib import Path

import pytest

from coral_server.jobs.prompts import (
    Choice,
    ScreenState,
    TerminalScreen,
    TurnEnd,
    read_claude_screen,
    read_screen,
)

SCREENS = Path(__file__).parent.parent / "fixtures" / "screens" / "claude"


def screen(name: str) -> list[str]:
    return (SCREENS / f"{name}.txt").read_text().splitlines()


PROMPTS = {  # screen: (tool, title, subject, question, yes keys, no keys, number of choices)
    "permission_write_create": ("Write", "Create file", "notes.md", "Do you want to create notes.md?"),
    "permission_write_overwrite": (
        "Write",
        "Overwrite file",
        "notes.md",
        "Do you want to overwrite notes.md?",
    ),
    "permission_edit": ("Edit", "Edit file", "notes.md", "Do you want to make this edit to notes.md?"),
    "permission_bash": (
        "Bash",
        "Bash command",
        "git add -A && git commit -qm 'notes: three lines'",
        "Do you want to proceed?",
    ),
    "permission_bash_sleep": (
        "Bash",
        "Bash command",
        "sleep 5 && touch slept.txt",
        "Do you want to proceed?",
    ),
}


@pytest.mark.parametrize("name", sorted(PROMPTS))
def test_permission_prompts_say_what_is_asked_and_which_keys_answer(name: str) -> None:
    tool, title, subject, question = PROMPTS[name]
    reading = read_claude_screen(screen(name))
    assert reading.state is ScreenState.PERMISSION
    prompt = reading.prompt
    assert prompt is not None
    assert (prompt.tool, prompt.title, prompt.subject, prompt.question) == (tool, title, subject, question)
    assert (prompt.yes_keys, prompt.no_keys, len(prompt.choices)) == ("1", "3", 3)
    assert prompt.choices[0] == Choice("1", "Yes")
    assert prompt.choices[-1] == Choice("3", "No")
    assert prompt.text.startswith("─") and question in prompt.text and "Esc to cancel" in prompt.text
    assert prompt.summary() == f"{tool}: {subject}"


def test_a_long_command_is_read_whole_and_no_is_the_second_of_two_choices() -> None:
    prompt = read_claude_screen(screen("permission_bash_two_choices")).prompt
    assert prompt is not None
    assert prompt.subject == (
        "for i in 1 2 3; do echo line $i >> notes.md; done && git add -A && git -c user.email=a@b "
        '-c user.name=a commit -qm "a long commit message that goes on and on so that the command '
        'wraps over more than one line of the terminal"'
    )
    assert [c.label for c in prompt.choices] == ["Yes", "No"]
    assert (prompt.yes_keys, prompt.no_keys) == ("1", "2")


def test_the_second_choice_is_read_whole_even_when_it_names_a_directory() -> None:
    prompt = read_claude_screen(screen("permission_bash")).prompt
    assert prompt is not None
    label = prompt.choices[1].label
    assert label.startswith("Yes, and don't ask again for git add and git commit commands in /")


@pytest.mark.parametrize(
    ("name", "kind", "accept", "labels"),
    [
        ("dialog_trust_folder", "trust_folder", "1", ["Yes, I trust this folder", "No, exit"]),
        ("dialog_api_key", "api_key", "1", ["Yes", "No (recommended)"]),
        ("dialog_bypass_permissions", "bypass_permissions", "2", ["No, exit", "Yes, I accept"]),
        ("first_run_unreachable", "unreachable", None, []),
    ],
)
def test_first_run_dialogs_are_told_apart_from_permission_prompts(
    name: str, kind: str, accept: str | None, labels: list[str]
) -> None:
    reading = read_claude_screen(screen(name))
    assert reading.state is ScreenState.DIALOG and reading.prompt is None
    assert reading.dialog is not None
    assert (reading.dialog.kind, reading.dialog.accept_keys) == (kind, accept)
    assert [c.label for c in reading.dialog.choices] == labels


@pytest.mark.parametrize(
    ("name", "turn_end"),
    [
        ("ready_after_dialogs", None),
        ("ready_bypass_permissions", None),
        ("done", TurnEnd.DONE),
        ("declined", TurnEnd.INTERRUPTED),
        ("declined_write", TurnEnd.INTERRUPTED),
        ("ctrl_c_once", TurnEnd.DONE),
    ],
)
def test_ready_for_input_with_how_the_last_turn_ended(name: str, turn_end: TurnEnd | None) -> None:
    reading = read_claude_screen(screen(name))
    assert (reading.state, reading.turn_end, reading.input_text) == (ScreenState.READY, turn_end, "")


@pytest.mark.parametrize("name", ["busy_model", "busy_tool"])
def test_busy_while_the_model_or_a_tool_works(name: str) -> None:
    reading = read_claude_screen(screen(name))
    assert reading.state is ScreenState.BUSY and reading.prompt is None


def test_the_input_box_text_is_read_including_several_lines() -> None:
    typed = read_claude_screen(screen("typed"))
    assert typed.input_text == "go on" and typed.state is ScreenState.READY and not typed.idle
    assert read_claude_screen(screen("done")).idle
    assert read_claude_screen(screen("pasted_multiline")).input_text == "line one\nline two\nline three"


def test_a_busy_status_line_alone_is_busy_even_without_a_spinner() -> None:
    rows = screen("ready_after_dialogs")
    status = next(i for i, row in enumerate(rows) if "for shortcuts" in row)
    rows[status] = "  esc to interrupt · ← for agents"
    assert read_claude_screen(rows).state is ScreenState.BUSY


def test_blank_and_unknown_screens_are_starting() -> None:
    assert read_claude_screen([" " * 120] * 40).state is ScreenState.STARTING
    assert read_claude_screen(["Welcome to Claude Code v2.1.197", "....."]).state is ScreenState.STARTING
    assert read_screen("no-such-agent", screen("permission_bash")).state is ScreenState.STARTING


def test_an_option_list_without_the_cancel_footer_is_not_a_prompt() -> None:
    rows = [row for row in screen("permission_bash") if "Esc to cancel" not in row]
    assert read_claude_screen(rows).state is not ScreenState.PERMISSION


def test_read_screen_dispatches_on_the_agent_type() -> None:
    assert read_screen("claude", screen("permission_edit")).state is ScreenState.PERMISSION


def test_terminal_screen_renders_output_and_hides_kitty_keyboard_sequences() -> None:
    replies: list[str] = []
    term = TerminalScreen(40, 5, answer=replies.append)
    term.feed(b"\x1b[>1u\x1b[<u\x1b[=1;1uhello\r\n\x1b[1;32mworld\x1b[0m\x1b")  # split sequence at the end
    term.feed(b"[6n")  # the rest: "where is the cursor?"
    rows = term.lines()
    assert rows[0].rstrip() == "hello" and rows[1].rstrip() == "world"
    assert replies == ["\x1b[2;6R"]


def test_a_prompt_caught_half_drawn_is_not_answered_yet() -> None:
    # A real frame read while the CLI was still drawing: option 3 has no label, no footer yet.
    reading = read_claude_screen(screen("partial_frame_permission"))
    assert reading.state is not ScreenState.PERMISSION and reading.prompt is None


def test_private_sequences_of_ink_clis_do_not_break_the_screen() -> None:
    screen = TerminalScreen(40, 5)
    screen.feed(b"\x1b[>4;2mhello \x1b[1mbold\x1b[0m\x1b[>4;0m")  # xterm modifyOtherKeys on and off
    assert screen.lines()[0].rstrip() == "hello bold"


OTHER_SCREENS = SCREENS.parent


def other(agent_type: str, name: str) -> list[str]:
    return (OTHER_SCREENS / agent_type / f"{name}.txt").read_text().splitlines()


@pytest.mark.parametrize(
    ("agent_type", "tool", "subject", "question", "yes", "keys"),
    [
        (
            "gemini",
            "Shell",
            "echo hi > hi.txt && git add -A && git commit -qm hi",
            "Allow execution of [Shell]?",
            "1",
            ["1", "2", "3"],
        ),
        (
            "codex",
            "Bash",
            "echo hi > hi.txt && git add -A && git commit -qm hi",
            "Would you like to run the following command?",
            "y",
            ["y", "p", "3"],
        ),
    ],
)
def test_gemini_and_codex_permission_prompts(
    agent_type: str, tool: str, subject: str, question: str, yes: str, keys: list[str]
) -> None:
    name = "permission_shell" if agent_type == "gemini" else "permission_exec"
    reading = read_screen(agent_type, other(agent_type, name))
    assert reading.state is ScreenState.PERMISSION and reading.prompt is not None
    prompt = reading.prompt
    assert (prompt.tool, prompt.subject, prompt.question) == (tool, subject, question)
    assert (prompt.yes_keys, prompt.no_keys) == (yes, "\x1b")
    assert [c.key for c in prompt.choices] == keys
    assert prompt.summary() == f"{tool}: {subject}"


@pytest.mark.parametrize("agent_type", ["gemini", "codex"])
@pytest.mark.parametrize(
    ("name", "state", "turn_end"),
    [
        ("starting", ScreenState.READY, None),  # the input box shown before the task is given
        ("busy", ScreenState.BUSY, None),
        ("done", ScreenState.READY, TurnEnd.DONE),
        ("declined", ScreenState.READY, TurnEnd.INTERRUPTED),
    ],
)
def test_gemini_and_codex_states(agent_type: str, name: str, state: ScreenState, turn_end: TurnEnd) -> None:
    reading = read_screen(agent_type, other(agent_type, name))
    assert (reading.state, reading.turn_end, reading.prompt) == (state, turn_end, None)
    if state is ScreenState.READY:
        assert reading.idle


def test_a_codex_answer_is_not_done_before_its_turn_is() -> None:
    # Its final message shows a moment before "Worked for ..." closes the turn: the CLI is not ended then.
    lines = [row for row in other("codex", "done") if "Worked for" not in row]
    reading = read_screen("codex", lines)
    assert (reading.state, reading.turn_end) == (ScreenState.READY, None)
