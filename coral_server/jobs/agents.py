"""How to run each coding-agent CLI: its argv, environment, a prepared HOME, and reading its final output.

One `AgentCli` per agent type (`claude`, `gemini`, `codex`). Nothing here starts a process: the job
runner builds a `Launch` (argv + environment, secrets marked) and runs it headless (`-p`-style, JSON
on stdout, stdin `/dev/null`) or interactively on a pseudo-terminal, then reads the result with
`parse_headless` or `read_interactive_result`.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

Mode = Literal["headless", "interactive"]

TERM = "xterm-256color"
# Variables copied from the server's environment into every agent's (nothing else is: no secrets leak).
PASSED_THROUGH = (
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "SSL_CERT_FILE",
    "NODE_EXTRA_CA_CERTS",
)


class UnknownAgentType(ValueError):
    """An `agent_type` no `AgentCli` serves."""


class BadFlags(ValueError):
    """A job's `flags` cannot be split into arguments as a POSIX shell would."""


class AgentOutputError(ValueError):
    """The CLI's final output holds no result (it crashed, was killed, or printed something else)."""


@dataclass(frozen=True, slots=True)
class Secret:
    """A value that must never be logged: `repr` and `str` hide it."""

    value: str = field(repr=False)

    def __str__(self) -> str:
        return "***"

    def __repr__(self) -> str:
        return "Secret('***')"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the CLI's model API is: a base URL (None: the vendor's own), the API key, the model."""

    api_key: Secret
    base_url: str | None = None
    model: str | None = None


@dataclass(frozen=True, slots=True)
class Launch:
    """A ready-to-run command: argv, the full environment, and which variables hold secrets."""

    argv: list[str]
    env: dict[str, str] = field(repr=False)
    secret_names: frozenset[str]
    mode: Mode

    def redacted_env(self) -> dict[str, str]:
        """The environment with every secret value replaced by `***` (safe to log)."""
        return {k: ("***" if k in self.secret_names else v) for k, v in self.env.items()}

    def redact(self, text: str) -> str:
        """`text` with every secret value of the environment replaced by `***`."""
        for name in self.secret_names:
            value = self.env.get(name)
            if value:
                text = text.replace(value, "***")
        return text


@dataclass(frozen=True, slots=True)
class AgentResult:
    """What a CLI reported at the end: its final text, usage, cost, turns and session id."""

    text: str | None
    is_error: bool = False
    usage: dict[str, int] = field(default_factory=dict)  # input_tokens, output_tokens, cache_* ...
    cost_usd: float | None = None
    turns: int | None = None
    session_id: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)  # the CLI's own summary, as it printed it

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "isError": self.is_error,
            "usage": self.usage,
            "costUsd": self.cost_usd,
            "turns": self.turns,
            "sessionId": self.session_id,
        }


def split_flags(flags: str) -> list[str]:
    """The arguments of a `flags` string, split as a POSIX shell would (quotes, escapes)."""
    try:
        return shlex.split(flags)
    except ValueError as exc:
        raise BadFlags(f"flags cannot be split as a shell would: {exc}") from exc


class AgentCli:
    """How to run one coding-agent CLI. Subclasses fill in the agent's specifics."""

    name: ClassVar[str]
    package: ClassVar[str]  # the npm package that installs it
    executable: ClassVar[str]  # the command's name in node_modules/.bin
    key_variable: ClassVar[str]  # the environment variable that carries the API key
    # Flags after which the CLI never asks for permission (so it can run headless unattended).
    skip_permission_flags: ClassVar[tuple[tuple[str, ...], ...]] = ()
    # On a terminal: the command that ends the CLI, and whether Enter must come apart from the text
    # typed before it (Ink-based input boxes take text and Enter in one read as a paste).
    exit_command: ClassVar[str] = "/exit"
    enter_apart: ClassVar[bool] = False

    # -- argv -----------------------------------------------------------------------------------

    def headless_argv(self, binary: str, prompt: str, flags: Sequence[str]) -> list[str]:
        raise NotImplementedError

    def interactive_argv(self, binary: str, prompt: str | None, flags: Sequence[str]) -> list[str]:
        """argv for a PTY; with `prompt`, the CLI starts on it (else type it in once ready)."""
        raise NotImplementedError

    def skips_permissions(self, flags: Sequence[str]) -> bool:
        """True when `flags` make the CLI run every tool without asking."""
        return any(_has_flag(flags, spelling) for spelling in self.skip_permission_flags)

    # -- environment and HOME ---------------------------------------------------------------------

    def environment(
        self, endpoint: Endpoint, home: Path, base: Mapping[str, str], flags: Sequence[str] = ()
    ) -> dict[str, str]:
        """The agent's whole environment: a few of `base`'s variables, HOME, and the agent's own."""
        env = {k: base[k] for k in PASSED_THROUGH if k in base}
        env["HOME"] = str(home)
        env["TERM"] = TERM
        env[self.key_variable] = endpoint.api_key.value
        return env

    def prepare_home(self, home: Path, cwd: Path, endpoint: Endpoint) -> None:
        """Write the CLI's configuration into a fresh `home` so no first-run dialog appears in `cwd`."""
        raise NotImplementedError

    def launch(
        self,
        *,
        binary: str,
        prompt: str,
        flags: str,
        endpoint: Endpoint,
        home: Path,
        mode: Mode,
        base_env: Mapping[str, str],
        prompt_in_argv: bool = True,
    ) -> Launch:
        """argv and environment for one run (HOME must have been prepared with `prepare_home`)."""
        args = split_flags(flags)
        if mode == "headless":
            argv = self.headless_argv(binary, prompt, args)
        else:
            argv = self.interactive_argv(binary, prompt if prompt_in_argv else None, args)
        env = self.environment(endpoint, home, base_env, args)
        return Launch(argv, env, frozenset({self.key_variable}), mode)

    # -- results ----------------------------------------------------------------------------------

    def parse_headless(self, stdout: str) -> AgentResult:
        """The result in the CLI's headless output; `AgentOutputError` when there is none."""
        raise NotImplementedError

    def read_interactive_result(self, home: Path, cwd: Path) -> AgentResult | None:
        """The result an interactive run left in its HOME (None if the CLI keeps none)."""
        return None


# -- Claude Code ----------------------------------------------------------------------------------


class ClaudeCli(AgentCli):
    """Claude Code (`@anthropic-ai/claude-code`): Anthropic Messages API."""

    name = "claude"
    package = "@anthropic-ai/claude-code"
    executable = "claude"
    key_variable = "ANTHROPIC_API_KEY"
    skip_permission_flags = (
        ("--dangerously-skip-permissions",),
        ("--permission-mode", "bypassPermissions"),
    )

    def headless_argv(self, binary: str, prompt: str, flags: Sequence[str]) -> list[str]:
        # `--` keeps a prompt that starts with "-" (or follows a variadic flag) a prompt.
        return [binary, "-p", "--output-format", "json", *flags, "--", prompt]

    def interactive_argv(self, binary: str, prompt: str | None, flags: Sequence[str]) -> list[str]:
        return [binary, *flags] + (["--", prompt] if prompt is not None else [])

    def environment(
        self, endpoint: Endpoint, home: Path, base: Mapping[str, str], flags: Sequence[str] = ()
    ) -> dict[str, str]:
        env = super().environment(endpoint, home, base, flags)
        env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] = "1"  # no telemetry, error reports, update checks
        env["DISABLE_AUTOUPDATER"] = "1"
        if endpoint.base_url:
            env["ANTHROPIC_BASE_URL"] = endpoint.base_url
        if endpoint.model:
            env["ANTHROPIC_MODEL"] = endpoint.model
        if self.skips_permissions(flags):
            # As root the CLI refuses to skip permissions unless told it runs in a sandbox; a job's
            # worktree is that sandbox, and the operator asked for the flag.
            env["IS_SANDBOX"] = "1"
        return env

    def prepare_home(self, home: Path, cwd: Path, endpoint: Endpoint) -> None:
        # Without these the CLI opens, in turn: onboarding (which needs api.anthropic.com), "Do you
        # trust the files in this folder?", "Do you want to use this API key?" (default: No) and, with
        # --dangerously-skip-permissions, a Bypass Permissions warning (default: No, exit).
        config = {
            "hasCompletedOnboarding": True,
            "theme": "dark",
            "autoUpdates": False,
            "bypassPermissionsModeAccepted": True,
            # The CLI remembers approved keys by their last 20 characters.
            "customApiKeyResponses": {"approved": [endpoint.api_key.value[-20:]], "rejected": []},
            "projects": {
                str(cwd.resolve()): {
                    "hasTrustDialogAccepted": True,
                    "projectOnboardingSeenCount": 1,
                    "hasCompletedProjectOnboarding": True,
                }
            },
        }
        home.mkdir(parents=True, exist_ok=True)
        _write_private(home / ".claude.json", json.dumps(config, indent=2))

    def parse_headless(self, stdout: str) -> AgentResult:
        # `--output-format json` prints one object; `stream-json` prints one per line, the last one
        # of type "result". Either way: the last `result` object.
        for obj in reversed(_json_objects(stdout)):
            if obj.get("type") == "result":
                return self._result(obj)
        raise AgentOutputError(f"no result in the output of {self.name}: {_excerpt(stdout)}")

    @staticmethod
    def _result(obj: Mapping[str, Any]) -> AgentResult:
        usage = obj.get("usage") if isinstance(obj.get("usage"), dict) else {}
        assert isinstance(usage, dict)
        return AgentResult(
            text=_str_or_none(obj.get("result")),
            is_error=bool(obj.get("is_error")) or obj.get("subtype") not in (None, "success"),
            usage=_int_fields(usage, _TOKEN_FIELDS),
            cost_usd=_float_or_none(obj.get("total_cost_usd")),
            turns=_int_or_none(obj.get("num_turns")),
            session_id=_str_or_none(obj.get("session_id")),
            raw=dict(obj),
        )

    def read_interactive_result(self, home: Path, cwd: Path) -> AgentResult | None:
        """The totals the CLI saves for `cwd` when it exits, and the final text from its transcript."""
        try:
            config = json.loads((home / ".claude.json").read_text())
        except (OSError, ValueError):
            return None
        # The CLI files a git worktree's totals under its main repository's path; a fresh HOME per run
        # holds one run's entries, so any entry that has totals is this run's.
        projects = config.get("projects") or {}
        entries = [projects.get(str(cwd.resolve())) or {}, *projects.values()]
        project = next((e for e in entries if isinstance(e, dict) and "lastSessionId" in e), {})
        session_id = _str_or_none(project.get("lastSessionId"))
        transcript = _transcript(home, session_id)
        if session_id is None and transcript is None:
            return None
        texts, message_usage = _read_transcript(transcript) if transcript else ([], {})
        if "lastTotalInputTokens" in project:  # written on a graceful exit
            usage = {
                "input_tokens": _int_or_none(project.get("lastTotalInputTokens")) or 0,
                "output_tokens": _int_or_none(project.get("lastTotalOutputTokens")) or 0,
                "cache_creation_input_tokens": _int_or_none(project.get("lastTotalCacheCreationInputTokens"))
                or 0,
                "cache_read_input_tokens": _int_or_none(project.get("lastTotalCacheReadInputTokens")) or 0,
            }
        else:  # killed: add up what the transcript recorded
            usage = {name: sum(u.get(name, 0) for u in message_usage.values()) for name in _TOKEN_FIELDS}
        return AgentResult(
            text=texts[-1] if texts else None,
            usage=usage,
            cost_usd=_float_or_none(project.get("lastCost")),
            turns=len(message_usage) or None,
            session_id=session_id or (transcript.stem if transcript else None),
            raw={k: v for k, v in project.items() if k.startswith("last") and k != "lastSessionMetrics"},
        )


_TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def _transcript(home: Path, session_id: str | None) -> Path | None:
    """The session's transcript (`~/.claude/projects/<cwd as a name>/<session id>.jsonl`)."""
    projects = home / ".claude" / "projects"
    pattern = f"*/{session_id}.jsonl" if session_id else "*/*.jsonl"
    found = sorted(projects.glob(pattern), key=lambda p: p.stat().st_mtime) if projects.is_dir() else []
    return found[-1] if found else None


def _read_transcript(path: Path) -> tuple[list[str], dict[str, dict[str, int]]]:
    """The assistant's texts, in order, and each model answer's usage (by message id)."""
    texts: list[str] = []
    usage: dict[str, dict[str, int]] = {}
    for entry in _json_objects(path.read_text(errors="replace")):
        message = entry.get("message")
        if entry.get("type") != "assistant" or not isinstance(message, dict):
            continue
        if isinstance(message.get("usage"), dict):
            usage[str(message.get("id"))] = _int_fields(message["usage"], _TOKEN_FIELDS)
        for block in message.get("content") or []:
            if isinstance(block, dict) and block.get("type") == "text" and block.get("text"):
                texts.append(str(block["text"]))
    return texts, usage


# -- Gemini CLI -------------------------------------------------------------------------------------


class GeminiCli(AgentCli):
    """Gemini CLI (`@google/gemini-cli`): Gemini API (`GOOGLE_GEMINI_BASE_URL` for another endpoint)."""

    name = "gemini"
    package = "@google/gemini-cli"
    executable = "gemini"
    key_variable = "GEMINI_API_KEY"
    skip_permission_flags = (("--yolo",), ("-y",), ("--approval-mode", "yolo"))
    exit_command = "/quit"
    enter_apart = True

    def headless_argv(self, binary: str, prompt: str, flags: Sequence[str]) -> list[str]:
        # `--prompt=` keeps a prompt that starts with "-" the option's value.
        return [binary, "--output-format", "json", *flags, f"--prompt={prompt}"]

    def interactive_argv(self, binary: str, prompt: str | None, flags: Sequence[str]) -> list[str]:
        return [binary, *flags] + ([f"--prompt-interactive={prompt}"] if prompt is not None else [])

    def environment(
        self, endpoint: Endpoint, home: Path, base: Mapping[str, str], flags: Sequence[str] = ()
    ) -> dict[str, str]:
        env = super().environment(endpoint, home, base, flags)
        env["GEMINI_CLI_NO_RELAUNCH"] = "true"  # it re-executes itself for a bigger heap: a second start-up
        if endpoint.base_url:
            env["GOOGLE_GEMINI_BASE_URL"] = endpoint.base_url
        return env

    def prepare_home(self, home: Path, cwd: Path, endpoint: Endpoint) -> None:
        # The API key method must be chosen in settings: with GOOGLE_GEMINI_BASE_URL set the CLI
        # otherwise picks a "gateway" method that headless mode rejects ("Invalid auth method").
        settings: dict[str, Any] = {
            "security": {"auth": {"selectedType": "gemini-api-key"}, "folderTrust": {"enabled": False}},
            "privacy": {"usageStatisticsEnabled": False},
            "telemetry": {"enabled": False},
            "general": {"disableAutoUpdate": True, "disableUpdateNag": True},
        }
        if endpoint.model:
            settings["model"] = {"name": endpoint.model}
        (home / ".gemini").mkdir(parents=True, exist_ok=True)
        _write_private(home / ".gemini" / "settings.json", json.dumps(settings, indent=2))
        trusted = {str(cwd.resolve()): "TRUST_FOLDER"}
        _write_private(home / ".gemini" / "trustedFolders.json", json.dumps(trusted, indent=2))

    def parse_headless(self, stdout: str) -> AgentResult:
        for obj in reversed(_json_objects(stdout)):
            if "response" in obj or "error" in obj:
                return self._result(obj)
        raise AgentOutputError(f"no result in the output of {self.name}: {_excerpt(stdout)}")

    @staticmethod
    def _result(obj: Mapping[str, Any]) -> AgentResult:
        models = ((obj.get("stats") or {}).get("models") or {}).values()
        usage = {"input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0}
        turns = 0
        for model in models:
            tokens = model.get("tokens") or {}
            usage["input_tokens"] += _int_or_none(tokens.get("prompt")) or 0
            usage["output_tokens"] += _int_or_none(tokens.get("candidates")) or 0
            usage["cache_read_input_tokens"] += _int_or_none(tokens.get("cached")) or 0
            main = (model.get("roles") or {}).get("main") or model.get("api") or {}
            turns += _int_or_none(main.get("totalRequests")) or 0
        error = obj.get("error")
        text = _str_or_none(obj.get("response"))
        if text is None and isinstance(error, dict):
            text = _str_or_none(error.get("message"))
        return AgentResult(
            text=text,
            is_error=error is not None,
            usage=usage,
            turns=turns or None,
            session_id=_str_or_none(obj.get("session_id")),
            raw=dict(obj),
        )


# -- Codex CLI --------------------------------------------------------------------------------------


class CodexCli(AgentCli):
    """Codex CLI (`@openai/codex`): OpenAI Responses API, through a model provider in its config."""

    name = "codex"
    package = "@openai/codex"
    executable = "codex"
    key_variable = "OPENAI_API_KEY"
    skip_permission_flags = (("--dangerously-bypass-approvals-and-sandbox",), ("--yolo",))
    exit_command = "/quit"
    enter_apart = True
    PROVIDER = "coral"

    def headless_argv(self, binary: str, prompt: str, flags: Sequence[str]) -> list[str]:
        return [binary, "exec", "--json", "--skip-git-repo-check", *flags, "--", prompt]

    def interactive_argv(self, binary: str, prompt: str | None, flags: Sequence[str]) -> list[str]:
        return [binary, *flags] + (["--", prompt] if prompt is not None else [])

    def environment(
        self, endpoint: Endpoint, home: Path, base: Mapping[str, str], flags: Sequence[str] = ()
    ) -> dict[str, str]:
        env = super().environment(endpoint, home, base, flags)
        env["CODEX_HOME"] = str(home / ".codex")
        return env

    def prepare_home(self, home: Path, cwd: Path, endpoint: Endpoint) -> None:
        # OPENAI_BASE_URL is not read: another endpoint is a model provider of the config.
        lines = []
        if endpoint.model:
            lines.append(f"model = {json.dumps(endpoint.model)}")
        if endpoint.base_url:
            lines += [
                f'model_provider = "{self.PROVIDER}"',
                "",
                f"[model_providers.{self.PROVIDER}]",
                f'name = "{self.PROVIDER}"',
                f"base_url = {json.dumps(endpoint.base_url)}",
                f'env_key = "{self.key_variable}"',
                'wire_api = "responses"',
            ]
        lines += ["", f"[projects.{json.dumps(str(cwd.resolve()))}]", 'trust_level = "trusted"']
        (home / ".codex").mkdir(parents=True, exist_ok=True)
        _write_private(home / ".codex" / "config.toml", "\n".join(lines) + "\n")

    def parse_headless(self, stdout: str) -> AgentResult:
        events = _json_objects(stdout)
        texts: list[str] = []
        usage = {"input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0}
        session_id: str | None = None
        turns = 0
        error: str | None = None
        for event in events:
            kind = event.get("type")
            item = event.get("item") if isinstance(event.get("item"), dict) else {}
            assert isinstance(item, dict)
            if kind == "thread.started":
                session_id = _str_or_none(event.get("thread_id"))
            elif kind == "item.completed" and item.get("type") == "agent_message":
                texts.append(str(item.get("text", "")))
            elif kind == "turn.completed":
                turns += 1
                used = event.get("usage") or {}
                usage["input_tokens"] += _int_or_none(used.get("input_tokens")) or 0
                usage["output_tokens"] += _int_or_none(used.get("output_tokens")) or 0
                usage["cache_read_input_tokens"] += _int_or_none(used.get("cached_input_tokens")) or 0
            elif kind == "turn.failed":
                failure = event.get("error")
                error = str(failure.get("message") if isinstance(failure, dict) else failure)
        if session_id is None and not turns and error is None:
            raise AgentOutputError(f"no result in the output of {self.name}: {_excerpt(stdout)}")
        return AgentResult(
            text=texts[-1] if texts else error,
            is_error=error is not None,
            usage=usage,
            turns=turns or None,
            session_id=session_id,
            raw={"events": len(events)},
        )


AGENTS: dict[str, AgentCli] = {cli.name: cli for cli in (ClaudeCli(), GeminiCli(), CodexCli())}


def agent_cli(agent_type: str) -> AgentCli:
    """The `AgentCli` of an agent type; `UnknownAgentType` names the known ones."""
    try:
        return AGENTS[agent_type]
    except KeyError:
        known = ", ".join(sorted(AGENTS))
        raise UnknownAgentType(f"unknown agent type {agent_type!r} (known: {known})") from None


def find_binary(cli: AgentCli, tools_dirs: Iterable[Path], path: str | None = None) -> Path | None:
    """The CLI's executable: `<dir>/<name>/node_modules/.bin/<exe>` of the first tools dir that has
    it (where `scripts/install-clis.sh` puts it), else the first on `path` (a PATH string)."""
    for tools in tools_dirs:
        candidate = tools / cli.name / "node_modules" / ".bin" / cli.executable
        if os.access(candidate, os.X_OK):
            return candidate
    for directory in (path or "").split(os.pathsep):
        if directory and os.access(Path(directory) / cli.executable, os.X_OK):
            return Path(directory) / cli.executable
    return None


# -- helpers ----------------------------------------------------------------------------------------


def _has_flag(flags: Sequence[str], spelling: tuple[str, ...]) -> bool:
    if len(spelling) == 1:
        return spelling[0] in flags
    option, value = spelling
    return any(
        (flag == option and i + 1 < len(flags) and flags[i + 1] == value) or flag == f"{option}={value}"
        for i, flag in enumerate(flags)
    )


def _write_private(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o600)


def _json_objects(text: str) -> list[dict[str, Any]]:
    """Every JSON object in `text`: the whole text if it is one, else one per line."""
    text = text.strip()
    try:
        whole = json.loads(text)
    except ValueError:
        pass
    else:
        return [whole] if isinstance(whole, dict) else []
    objects = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            objects.append(obj)
    return objects


def _int_fields(source: Mapping[str, Any], names: Iterable[str]) -> dict[str, int]:
    return {name: value for name in names if (value := _int_or_none(source.get(name))) is not None}


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _excerpt(text: str, limit: int = 300) -> str:
    text = text.strip()
    return repr(text if len(text) <= limit else text[:limit] + "…")
