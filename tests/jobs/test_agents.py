"""Agent CLI descriptions: argv, flags, environment (secrets), prepared HOMEs, and reading real outputs."""

from __future__ import annotations

import json
import os
import stat
import tomllib
from pathlib import Path

import pytest

from coral_server.jobs.agents import (
    AGENTS,
    AgentOutputError,
    BadFlags,
    ClaudeCli,
    CodexCli,
    Endpoint,
    GeminiCli,
    Secret,
    UnknownAgentType,
    agent_cli,
    find_binary,
    split_flags,
)

OUTPUTS = Path(__file__).parent.parent / "fixtures" / "agent_output"
KEY = Secret("sk-ant-test-0123456789abcdefghijklmnop")
ENDPOINT = Endpoint(KEY, "http://127.0.0.1:9/", "claude-test")
BASE_ENV = {
    "PATH": "/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "AWS_SECRET_ACCESS_KEY": "server-secret",
    "HOME": "/root",
}


def output(name: str) -> str:
    return (OUTPUTS / name).read_text()


def test_flags_split_as_a_shell_would_and_bad_ones_say_why() -> None:
    assert split_flags("") == []
    assert split_flags("--allowedTools 'Bash(git:*)' Write --model \"claude x\"") == [
        "--allowedTools",
        "Bash(git:*)",
        "Write",
        "--model",
        "claude x",
    ]
    with pytest.raises(BadFlags, match="cannot be split as a shell would: No closing quotation"):
        split_flags("--model 'unterminated")
    with pytest.raises(BadFlags, match="No escaped character"):
        split_flags("--x \\")


def test_agent_types_and_an_unknown_one() -> None:
    assert sorted(AGENTS) == ["claude", "codex", "gemini"]
    assert isinstance(agent_cli("claude"), ClaudeCli)
    with pytest.raises(
        UnknownAgentType, match="unknown agent type 'cursor' \\(known: claude, codex, gemini\\)"
    ):
        agent_cli("cursor")


def test_claude_argv_keeps_the_prompt_a_prompt() -> None:
    claude = ClaudeCli()
    flags = ["--allowedTools", "Write", "Bash"]  # variadic: would swallow a prompt after it without "--"
    assert claude.headless_argv("claude", "-v: do it", flags) == [
        "claude",
        "-p",
        "--output-format",
        "json",
        "--allowedTools",
        "Write",
        "Bash",
        "--",
        "-v: do it",
    ]
    assert claude.interactive_argv("claude", "do it", ["--model", "m"]) == [
        "claude",
        "--model",
        "m",
        "--",
        "do it",
    ]
    assert claude.interactive_argv("claude", None, []) == ["claude"]


def test_which_flags_skip_permission_prompts() -> None:
    claude, gemini, codex = ClaudeCli(), GeminiCli(), CodexCli()
    assert claude.skips_permissions(["--dangerously-skip-permissions"])
    assert claude.skips_permissions(["--permission-mode", "bypassPermissions"])
    assert claude.skips_permissions(["--permission-mode=bypassPermissions"])
    assert not claude.skips_permissions(["--permission-mode", "acceptEdits", "--allowedTools", "Bash"])
    assert not claude.skips_permissions(["--permission-mode"])
    assert gemini.skips_permissions(["-y"]) and gemini.skips_permissions(["--approval-mode", "yolo"])
    assert not gemini.skips_permissions(["--approval-mode", "auto_edit"])
    assert codex.skips_permissions(["--dangerously-bypass-approvals-and-sandbox"])
    assert not codex.skips_permissions(["--sandbox", "workspace-write"])


def test_claude_launch_environment_carries_only_what_it_needs_and_hides_the_key(tmp_path: Path) -> None:
    launch = ClaudeCli().launch(
        binary="/x/claude",
        prompt="hi",
        flags="--model m",
        endpoint=ENDPOINT,
        home=tmp_path,
        mode="headless",
        base_env=BASE_ENV,
    )
    assert launch.env == {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(tmp_path),
        "TERM": "xterm-256color",
        "ANTHROPIC_API_KEY": KEY.value,
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:9/",
        "ANTHROPIC_MODEL": "claude-test",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
    }
    assert launch.argv == ["/x/claude", "-p", "--output-format", "json", "--model", "m", "--", "hi"]
    assert launch.redacted_env()["ANTHROPIC_API_KEY"] == "***"
    assert KEY.value not in repr(launch) and KEY.value not in repr(ENDPOINT) and KEY.value not in str(KEY)
    assert launch.redact(f"401: key {KEY.value} rejected") == "401: key *** rejected"

    skipping = ClaudeCli().launch(
        binary="claude",
        prompt="hi",
        flags="--dangerously-skip-permissions",
        endpoint=Endpoint(KEY),
        home=tmp_path,
        mode="interactive",
        base_env={},
    )
    assert skipping.env["IS_SANDBOX"] == "1"  # else, as root, the CLI refuses the flag
    assert "ANTHROPIC_BASE_URL" not in skipping.env  # no base URL: the vendor's own
    assert skipping.argv == ["claude", "--dangerously-skip-permissions", "--", "hi"]
    typed_later = ClaudeCli().launch(
        binary="claude",
        prompt="hi",
        flags="",
        endpoint=ENDPOINT,
        home=tmp_path,
        mode="interactive",
        base_env={},
        prompt_in_argv=False,
    )
    assert typed_later.argv == ["claude"]

    with pytest.raises(BadFlags):
        ClaudeCli().launch(
            binary="c", prompt="p", flags="'", endpoint=ENDPOINT, home=tmp_path, mode="headless", base_env={}
        )


def test_claude_home_is_seeded_so_no_first_run_dialog_appears(tmp_path: Path) -> None:
    home, cwd = tmp_path / "home", tmp_path / "work" / ".." / "repo"
    ClaudeCli().prepare_home(home, cwd, ENDPOINT)
    config_file = home / ".claude.json"
    config = json.loads(config_file.read_text())
    assert config["hasCompletedOnboarding"] is True
    assert config["customApiKeyResponses"]["approved"] == [KEY.value[-20:]]
    assert config["bypassPermissionsModeAccepted"] is True
    assert config["projects"][str((tmp_path / "repo").resolve())]["hasTrustDialogAccepted"] is True
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600


def test_claude_results_from_real_headless_output() -> None:
    claude = ClaudeCli()
    result = claude.parse_headless(output("claude_json.json"))
    assert result.text == "Done: wrote and committed hello.txt" and not result.is_error
    assert result.usage == {
        "input_tokens": 300,
        "output_tokens": 60,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    assert result.cost_usd is not None and result.cost_usd > 0
    assert result.turns == 3 and result.session_id and len(result.session_id) == 36
    assert result.raw["permission_denials"] == []
    assert result.to_json()["sessionId"] == result.session_id

    streamed = claude.parse_headless(output("claude_stream.jsonl"))
    assert (streamed.text, streamed.turns, streamed.usage) == (result.text, 3, result.usage)

    denied = claude.parse_headless(output("claude_denied.json"))
    assert not denied.is_error  # the CLI finished; the tools were refused
    assert [d["tool_name"] for d in denied.raw["permission_denials"]] == ["Write", "Bash"]

    failed = claude.parse_headless(output("claude_api_error.json"))
    assert failed.is_error and failed.text == "API Error: 400 bad request from fake" and failed.cost_usd == 0

    for junk in ("", "Error: something broke\n", '{"type": "system"}', "[1, 2]"):
        with pytest.raises(AgentOutputError, match="no result in the output of claude"):
            claude.parse_headless(junk)


def test_claude_interactive_result_from_a_killed_session_adds_up_its_transcript(tmp_path: Path) -> None:
    claude = ClaudeCli()
    assert claude.read_interactive_result(tmp_path, tmp_path) is None  # no HOME config at all
    claude.prepare_home(tmp_path, tmp_path, ENDPOINT)
    assert claude.read_interactive_result(tmp_path, tmp_path) is None  # the CLI never ran
    project_dir = tmp_path / ".claude" / "projects" / "-repo"
    project_dir.mkdir(parents=True)
    usage = {"input_tokens": 100, "output_tokens": 20, "cache_read_input_tokens": 0}
    lines = [
        {"type": "user", "message": {"role": "user", "content": "go"}},
        {"type": "assistant", "message": {"id": "m1", "content": [{"type": "tool_use"}], "usage": usage}},
        {
            "type": "assistant",
            "message": {"id": "m2", "content": [{"type": "text", "text": "done"}], "usage": usage},
        },
    ]
    (project_dir / "abc.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    result = claude.read_interactive_result(tmp_path, tmp_path)
    assert result is not None
    assert (result.text, result.turns, result.session_id, result.cost_usd) == ("done", 2, "abc", None)
    assert result.usage["input_tokens"] == 200 and result.usage["output_tokens"] == 40


def test_gemini_home_argv_environment_and_real_output(tmp_path: Path) -> None:
    gemini = GeminiCli()
    gemini.prepare_home(
        tmp_path, tmp_path / "repo", Endpoint(Secret("g-key"), "http://127.0.0.1:9", "gemini-x")
    )
    settings = json.loads((tmp_path / ".gemini" / "settings.json").read_text())
    assert settings["security"]["auth"]["selectedType"] == "gemini-api-key"
    assert settings["model"] == {"name": "gemini-x"}
    trusted = json.loads((tmp_path / ".gemini" / "trustedFolders.json").read_text())
    assert trusted == {str((tmp_path / "repo").resolve()): "TRUST_FOLDER"}
    launch = gemini.launch(
        binary="gemini",
        prompt="-x",
        flags="--yolo",
        endpoint=Endpoint(Secret("g-key"), "http://127.0.0.1:9"),
        home=tmp_path,
        mode="headless",
        base_env=BASE_ENV,
    )
    assert launch.argv == ["gemini", "--output-format", "json", "--yolo", "--prompt=-x"]
    assert launch.env["GEMINI_API_KEY"] == "g-key" and launch.secret_names == {"GEMINI_API_KEY"}
    assert launch.env["GOOGLE_GEMINI_BASE_URL"] == "http://127.0.0.1:9"

    result = gemini.parse_headless(output("gemini_json.json"))
    assert (result.text, result.turns, result.is_error) == ("Done: wrote hello.txt", 3, False)
    assert result.usage["input_tokens"] == 400 and result.session_id
    error = gemini.parse_headless(
        json.dumps(
            {"session_id": "s", "error": {"type": "Error", "message": "Invalid auth method selected."}}
        )
    )
    assert error.is_error and error.text == "Invalid auth method selected."


def test_codex_home_argv_environment_and_real_output(tmp_path: Path) -> None:
    codex = CodexCli()
    codex.prepare_home(
        tmp_path, tmp_path / "repo", Endpoint(Secret("o-key"), "http://127.0.0.1:9/v1", "fake-model")
    )
    config = tomllib.loads((tmp_path / ".codex" / "config.toml").read_text())
    assert config["model"] == "fake-model" and config["model_provider"] == "coral"
    assert config["model_providers"]["coral"] == {
        "name": "coral",
        "base_url": "http://127.0.0.1:9/v1",
        "env_key": "OPENAI_API_KEY",
        "wire_api": "responses",
    }
    assert config["projects"][str((tmp_path / "repo").resolve())] == {"trust_level": "trusted"}
    launch = codex.launch(
        binary="codex",
        prompt="do it",
        flags="--sandbox workspace-write",
        endpoint=Endpoint(Secret("o-key")),
        home=tmp_path,
        mode="headless",
        base_env=BASE_ENV,
    )
    assert launch.argv == [
        "codex",
        "exec",
        "--json",
        "--skip-git-repo-check",
        "--sandbox",
        "workspace-write",
        "--",
        "do it",
    ]
    assert launch.env["CODEX_HOME"] == str(tmp_path / ".codex") and launch.env["OPENAI_API_KEY"] == "o-key"

    result = codex.parse_headless(output("codex_exec.jsonl"))
    assert (result.text, result.turns, result.is_error) == ("Done: wrote hello.txt", 1, False)
    assert result.usage["input_tokens"] == 200 and result.session_id
    failed = codex.parse_headless(
        '{"type":"thread.started","thread_id":"t"}\n'
        '{"type":"turn.failed","error":{"message":"401 Unauthorized"}}\n'
    )
    assert failed.is_error and failed.text == "401 Unauthorized"
    with pytest.raises(AgentOutputError):
        codex.parse_headless("Reading additional input from stdin...\n")


def test_find_binary_prefers_the_tools_dir_then_path(tmp_path: Path) -> None:
    claude = ClaudeCli()
    tools = tmp_path / "tools"
    bin_dir = tools / "claude" / "node_modules" / ".bin"
    on_path = tmp_path / "path"
    for directory in (bin_dir, on_path):
        directory.mkdir(parents=True)
        (directory / "claude").write_text("#!/bin/sh\n")
    assert find_binary(claude, [tools], str(on_path)) is None  # neither is executable yet
    (on_path / "claude").chmod(0o755)
    assert find_binary(claude, [tools], f"/nonexistent{os.pathsep}{on_path}") == on_path / "claude"
    (bin_dir / "claude").chmod(0o755)
    assert find_binary(claude, [tmp_path / "missing", tools], str(on_path)) == bin_dir / "claude"
