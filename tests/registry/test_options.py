"""Tests of option validation, resolution and encoding (coral_server.registry.options)."""

from __future__ import annotations

import base64
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from coral_server.registry import (
    AgentManifest,
    FieldError,
    OptionsInvalid,
    ResolvedOption,
    materialize,
    public_value,
    public_values,
    resolve_options,
)

MakeAgent = Callable[..., AgentManifest]
SECRET = "hunter2-TOPSECRET"


def one(make_agent: MakeAgent, type_: str, extra: str = "") -> AgentManifest:
    """An agent with a single option ``V`` of the given type (plus extra TOML lines in its table)."""
    return make_agent(f'[options.V]\ntype = "{type_}"\n{extra}')


def errors_of(manifest: AgentManifest, requested: dict[str, object]) -> list[FieldError]:
    with pytest.raises(OptionsInvalid) as info:
        resolve_options(manifest, requested)
    return info.value.errors


# -- happy paths -----------------------------------------------------------------------------------

HAPPY = [
    ("string", "hello", "hello"),
    ("string", "", ""),
    ("bool", True, True),
    ("bool", False, False),
    ("i8", -128, -128),
    ("i8", 127, 127),
    ("i16", -32768, -32768),
    ("i32", 2**31 - 1, 2**31 - 1),
    ("i64", -(2**63), -(2**63)),
    ("u8", 255, 255),
    ("u16", 65535, 65535),
    ("u32", 0, 0),
    ("u64", 2**64 - 1, 2**64 - 1),
    ("f32", 1.5, 1.5),
    ("f32", 3, 3.0),
    ("f64", -0.25, -0.25),
    ("number", 7, 7.0),
    ("secret", "pw", "pw"),
    ("blob", "AAEC", b"\x00\x01\x02"),
    ("blob", "", b""),
    ("list[string]", ["a", "b"], ["a", "b"]),
    ("list[i32]", [1, -2, 3], [1, -2, 3]),
    ("list[bool]", [True, False], [True, False]),
    ("list[f64]", [1, 2.5], [1.0, 2.5]),
    ("list[blob]", ["AA==", "AQ=="], [b"\x00", b"\x01"]),
    ("list[u8]", [], []),
]


@pytest.mark.parametrize(("type_", "raw", "expected"), HAPPY)
def test_every_type_accepts_valid_values(
    make_agent: MakeAgent, type_: str, raw: object, expected: object
) -> None:
    manifest = one(make_agent, type_)
    for requested in ({"V": {"type": type_, "value": raw}}, {"V": {"value": raw}}, {"V": raw}):
        [resolved] = resolve_options(manifest, requested)
        assert resolved.name == "V"
        assert resolved.value == expected
        assert type(resolved.value) is type(expected)


@pytest.mark.parametrize(
    ("manifest_type", "extra", "declared", "value"),
    [
        ("secret", "", "string", "x"),
        ("string", "secret = true", "secret", "x"),
        ("number", "", "f64", 1.0),
        ("f64", "", "number", 1.0),
        ("list[number]", "", "list[f64]", [1.0]),
        ("list[f64]", "", "list[number]", [1.0]),
    ],
)
def test_equivalent_type_spellings(
    make_agent: MakeAgent, manifest_type: str, extra: str, declared: str, value: object
) -> None:
    manifest = one(make_agent, manifest_type, extra)
    [resolved] = resolve_options(manifest, {"V": {"type": declared, "value": value}})
    assert resolved.value == value


# -- rejections ------------------------------------------------------------------------------------

REJECT = [
    # wrong JSON types
    ("i32", "", "5", "", "expected an integer (i32), got string"),
    ("i32", "", True, "", "expected an integer (i32), got boolean"),
    ("i32", "", 5.0, "", "expected an integer (i32), got number"),
    ("u8", "", [1], "", "expected an integer (u8), got array"),
    ("f64", "", "1.5", "", "expected a number (f64), got string"),
    ("f64", "", True, "", "expected a number (f64), got boolean"),
    ("number", "", {"x": 1}, "", "expected a number (f64), got object"),
    ("bool", "", "true", "", "expected a boolean, got string"),
    ("bool", "", 1, "", "expected a boolean, got integer"),
    ("string", "", 5, "", "expected a string, got integer"),
    ("string", "", ["a"], "", "expected a string, got array"),
    ("blob", "", 5, "", "expected a base64 string for a blob, got integer"),
    ("blob", "", "not base64!", "", "expected standard base64 data for a blob"),
    ("list[i32]", "", "1,2", "", "expected an array of i32, got string"),
    # integer and float ranges
    ("i8", "", 128, "", "128 is out of range for i8 (-128..127)"),
    ("i8", "", -129, "", "-129 is out of range for i8 (-128..127)"),
    ("i16", "", 32768, "", "32768 is out of range for i16 (-32768..32767)"),
    ("i32", "", -(2**31) - 1, "", "-2147483649 is out of range for i32 (-2147483648..2147483647)"),
    (
        "i64",
        "",
        2**63,
        "",
        "9223372036854775808 is out of range for i64 (-9223372036854775808..9223372036854775807)",
    ),
    ("u8", "", -1, "", "-1 is out of range for u8 (0..255)"),
    ("u16", "", 65536, "", "65536 is out of range for u16 (0..65535)"),
    ("u32", "", 2**32, "", "4294967296 is out of range for u32 (0..4294967295)"),
    ("u64", "", 2**64, "", "18446744073709551616 is out of range for u64 (0..18446744073709551615)"),
    ("f32", "", 1e39, "", "1e+39 is out of range for f32"),
    ("f64", "", float("nan"), "", "expected a finite number (f64)"),
    # validation rules
    ("i32", "validation = { min = 10 }", 5, "", "5 is below the minimum 10"),
    ("i32", "validation = { max = 10 }", 11, "", "11 is above the maximum 10"),
    ("f64", "validation = { min = 0.5 }", 0.25, "", "0.25 is below the minimum 0.5"),
    ("u8", "validation = { variants = [1, 2] }", 3, "", "3 is not one of the allowed values: 1, 2"),
    ("string", "validation = { min_length = 3 }", "ab", "", "must be at least 3 characters long"),
    ("string", "validation = { max_length = 3 }", "abcd", "", "must be at most 3 characters long"),
    ("string", 'validation = { regex = "[a-z]+" }', "abc1", "", "'abc1' does not match the pattern '[a-z]+'"),
    (
        "string",
        'validation = { variants = ["a", "b"] }',
        "c",
        "",
        "'c' is not one of the allowed values: 'a', 'b'",
    ),
    ("blob", "validation = { min_size = 4 }", "AAEC", "", "blob must be at least 4 bytes"),
    ("blob", "validation = { max_size = 2 }", "AAEC", "", "blob must be at most 2 bytes"),
    # list items one by one
    ("list[i32]", "", [1, "2", 3], "[1]", "expected an integer (i32), got string"),
    ("list[u8]", "", [1, 2, 300], "[2]", "300 is out of range for u8 (0..255)"),
    (
        "list[string]",
        "validation = { max_length = 2 }",
        ["ok", "long"],
        "[1]",
        "must be at most 2 characters long",
    ),
    ("list[bool]", "", [True, None], "[1]", "expected a boolean, got null"),
]


@pytest.mark.parametrize(("type_", "extra", "raw", "suffix", "message"), REJECT)
def test_invalid_values_are_rejected(
    make_agent: MakeAgent, type_: str, extra: str, raw: object, suffix: str, message: str
) -> None:
    manifest = one(make_agent, type_, extra)
    assert errors_of(manifest, {"V": {"type": type_, "value": raw}}) == [
        FieldError(f"options.V.value{suffix}", message)
    ]


def test_list_reports_every_bad_item(make_agent: MakeAgent) -> None:
    manifest = one(make_agent, "list[i8]")
    errors = errors_of(manifest, {"V": [1, 200, "x", 3, -200]})
    assert [e.path for e in errors] == ["options.V.value[1]", "options.V.value[2]", "options.V.value[4]"]


def test_nul_only_rejected_where_an_environment_variable_carries_it(make_agent: MakeAgent) -> None:
    for type_, raw, suffix in [
        ("string", "a\0b", ""),
        ("secret", "a\0b", ""),
        ("list[string]", ["x", "\0"], "[1]"),
    ]:
        [error] = errors_of(one(make_agent, type_), {"V": raw})
        assert error.path == f"options.V.value{suffix}" and "NUL" in error.message
    # A file, a base64-encoded variable or a blob carries any byte.
    for type_, extra in [("string", 'transport = "fs"'), ("string", "base64 = true"), ("blob", "")]:
        raw = "AGE=" if type_ == "blob" else "a\0b"
        assert resolve_options(one(make_agent, type_, extra), {"V": raw})


def test_regex_must_match_fully(make_agent: MakeAgent) -> None:
    manifest = one(make_agent, "string", 'validation = { regex = "[a-z]+" }')
    assert resolve_options(manifest, {"V": "abc"})[0].value == "abc"
    assert [e.path for e in errors_of(manifest, {"V": "1abc"})] == ["options.V.value"]


def test_declared_type_mismatch(make_agent: MakeAgent) -> None:
    manifest = one(make_agent, "i32")
    assert errors_of(manifest, {"V": {"type": "string", "value": "5"}}) == [
        FieldError("options.V.type", "declared type 'string' does not match the option type 'i32'")
    ]
    assert [e.path for e in errors_of(manifest, {"V": {"type": "nonsense", "value": 5}})] == [
        "options.V.type"
    ]


def test_unknown_option(make_agent: MakeAgent) -> None:
    manifest = one(make_agent, "i32")
    assert errors_of(manifest, {"NOPE": 1}) == [
        FieldError("options.NOPE", "unknown option: agent tester@1.0.0 has no option 'NOPE'")
    ]


def test_missing_required_option(make_agent: MakeAgent) -> None:
    manifest = one(make_agent, "string", "required = true")
    expected = [FieldError("options.V.value", "missing value for required option")]
    assert errors_of(manifest, {}) == expected
    assert errors_of(manifest, {"V": None}) == expected
    assert errors_of(manifest, {"V": {"type": "string"}}) == expected


def test_required_option_with_default_is_satisfied(make_agent: MakeAgent) -> None:
    manifest = one(make_agent, "u8", "required = true\ndefault = 4")
    assert resolve_options(manifest, {})[0].value == 4


def test_all_errors_are_reported_at_once(make_agent: MakeAgent) -> None:
    manifest = make_agent(
        """\
        [options.A]
        type = "i32"
        [options.B]
        type = "string"
        required = true
        [options.C]
        type = "bool"
        [options.D]
        type = "list[u8]"
        [options.E]
        type = "f64"
        """
    )
    with pytest.raises(OptionsInvalid) as info:
        resolve_options(
            manifest,
            {"A": "x", "C": 1, "D": [1, -1], "E": {"type": "i32", "value": 1}, "ZZ": 1},
        )
    assert [e.path for e in info.value.errors] == [
        "options.ZZ",
        "options.A.value",
        "options.B.value",
        "options.C.value",
        "options.D.value[1]",
        "options.E.type",
    ]
    assert "options.A.value: expected an integer (i32), got string" in str(info.value)


def test_custom_path_prefix(make_agent: MakeAgent) -> None:
    manifest = one(make_agent, "i32")
    with pytest.raises(OptionsInvalid) as info:
        resolve_options(manifest, {"V": "x"}, path_prefix="agentGraph.agents.a.options")
    assert [e.path for e in info.value.errors] == ["agentGraph.agents.a.options.V.value"]


def test_request_must_be_an_object(make_agent: MakeAgent) -> None:
    manifest = one(make_agent, "i32")
    with pytest.raises(OptionsInvalid) as info:
        resolve_options(manifest, [1, 2])  # type: ignore[arg-type]
    assert info.value.errors == [FieldError("options", "expected an object, got array")]


# -- secrets never leak ----------------------------------------------------------------------------

SECRET_CASES = [
    ("string", "validation = { max_length = 3 }", SECRET),
    ("string", "validation = { min_length = 99 }", SECRET),
    ("string", 'validation = { regex = "[0-9]+" }', SECRET),
    ("string", 'validation = { variants = ["a"] }', SECRET),
    ("i32", "validation = { max = 3 }", 987654),
    ("i32", "validation = { variants = [1] }", 987654),
    ("u8", "", 987654),
    ("f32", "", 9.87654e39),
    ("list[string]", 'validation = { regex = "[0-9]+" }', ["1", SECRET]),
]


@pytest.mark.parametrize(("type_", "extra", "raw"), SECRET_CASES)
def test_secret_values_never_appear_in_errors(
    make_agent: MakeAgent, type_: str, extra: str, raw: object
) -> None:
    manifest = one(make_agent, type_, "secret = true\n" + extra)
    with pytest.raises(OptionsInvalid) as info:
        resolve_options(manifest, {"V": raw})
    text = str(info.value) + repr(info.value.errors) + repr(info.value)
    assert len(info.value.errors) == 1
    for needle in (SECRET, "987654", "9.87654"):
        assert needle not in text


def test_secret_type_error_does_not_leak(make_agent: MakeAgent) -> None:
    manifest = one(make_agent, "secret")
    errors = errors_of(manifest, {"V": {"type": "i32", "value": SECRET}})
    assert SECRET not in repr(errors)
    assert errors == [
        FieldError("options.V.type", "declared type 'i32' does not match the option type 'string'")
    ]


def test_resolved_secret_repr_is_masked(make_agent: MakeAgent) -> None:
    manifest = one(make_agent, "secret")
    [resolved] = resolve_options(manifest, {"V": SECRET})
    assert resolved.value == SECRET
    assert SECRET not in repr(resolved)


# -- defaults --------------------------------------------------------------------------------------


def test_defaults_and_absent_options(make_agent: MakeAgent) -> None:
    manifest = make_agent(
        """\
        [options.WITH_DEFAULT]
        type = "u16"
        default = 8080
        [options.NO_DEFAULT]
        type = "string"
        [options.LIST_NO_DEFAULT]
        type = "list[string]"
        [options.LIST_DEFAULT]
        type = "list[i8]"
        default = [1, 2]
        [options.GIVEN]
        type = "bool"
        default = false
        [options.BLOB_DEFAULT]
        type = "blob"
        default = "AQI="
        """
    )
    resolved = resolve_options(manifest, {"GIVEN": True})
    assert [(r.name, r.value) for r in resolved] == [
        ("WITH_DEFAULT", 8080),
        ("LIST_NO_DEFAULT", []),
        ("LIST_DEFAULT", [1, 2]),
        ("GIVEN", True),
        ("BLOB_DEFAULT", b"\x01\x02"),
    ]
    env = materialize(resolved, Path("/nonexistent-not-needed"))
    assert env.env == {
        "WITH_DEFAULT": "8080",
        "LIST_NO_DEFAULT": "",
        "LIST_DEFAULT": "1,2",
        "GIVEN": "1",
        "BLOB_DEFAULT": "AQI=",
    }
    assert "NO_DEFAULT" not in env.env


def test_null_value_falls_back_to_default(make_agent: MakeAgent) -> None:
    manifest = one(make_agent, "i32", "default = 3")
    assert resolve_options(manifest, {"V": {"type": "i32", "value": None}})[0].value == 3
    assert resolve_options(manifest, {"V": None})[0].value == 3


def test_default_list_is_not_shared(make_agent: MakeAgent) -> None:
    manifest = one(make_agent, "list[i32]", "default = [1]")
    first = resolve_options(manifest, {})[0].value
    assert isinstance(first, list)
    first.append(2)
    assert resolve_options(manifest, {})[0].value == [1]


# -- encoding --------------------------------------------------------------------------------------

ENV = [
    ("string", "héllo, world", "", "héllo, world"),
    ("string", "héllo", "base64 = true", "aMOpbGxv"),
    ("bool", True, "", "1"),
    ("bool", False, "", "0"),
    ("i8", -5, "", "-5"),
    ("i16", 300, "", "300"),
    ("i32", 5, "", "5"),
    ("i64", -(2**63), "", "-9223372036854775808"),
    ("u8", 255, "", "255"),
    ("u16", 0, "", "0"),
    ("u32", 4294967295, "", "4294967295"),
    ("u64", 2**64 - 1, "", "18446744073709551615"),
    ("f32", 0.1, "", "0.1"),
    ("f64", 1.5, "", "1.5"),
    ("f64", 2, "", "2.0"),
    ("number", 3, "", "3.0"),
    ("blob", "AAEC", "", "AAEC"),
    ("list[i32]", [1, 2, 3], "", "1,2,3"),
    ("list[bool]", [True, False], "", "1,0"),
    ("list[string]", ["a", "b"], "", "a,b"),
    ("list[string]", ["a", "b"], "base64 = true", "YQ==,Yg=="),
    ("list[f64]", [0.5, 1], "", "0.5,1.0"),
    ("list[blob]", ["AA==", "AQI="], "", "AA==,AQI="),
    ("list[u8]", [], "", ""),
]


@pytest.mark.parametrize(("type_", "raw", "extra", "expected"), ENV)
def test_env_encoding(
    make_agent: MakeAgent, tmp_path: Path, type_: str, raw: object, extra: str, expected: str
) -> None:
    manifest = one(make_agent, type_, extra)
    out = materialize(resolve_options(manifest, {"V": raw}), tmp_path / "files")
    assert out.env == {"V": expected}
    assert out.files == []
    assert out.secret_values == set()


FS = [
    ("i8", -1, b"\xff"),
    ("i16", -256, b"\xff\x00"),
    ("i32", 5, b"\x00\x00\x00\x05"),
    ("i64", -2, b"\xff" * 7 + b"\xfe"),
    ("u8", 200, b"\xc8"),
    ("u16", 258, b"\x01\x02"),
    ("u32", 1, b"\x00\x00\x00\x01"),
    ("u64", 2**64 - 1, b"\xff" * 8),
    ("f32", 1.5, b"\x3f\xc0\x00\x00"),
    ("f64", 1.5, b"\x3f\xf8\x00\x00\x00\x00\x00\x00"),
    ("number", -2, b"\xc0\x00\x00\x00\x00\x00\x00\x00"),
    ("bool", True, b"\x01"),
    ("bool", False, b"\x00"),
    ("string", "héllo", "héllo".encode()),
    ("blob", "AAEC/w==", b"\x00\x01\x02\xff"),
]


@pytest.mark.parametrize(("type_", "raw", "expected"), FS)
def test_fs_encoding_exact_bytes(
    make_agent: MakeAgent, tmp_path: Path, type_: str, raw: object, expected: bytes
) -> None:
    manifest = one(make_agent, type_, 'transport = "fs"')
    file_dir = tmp_path / "not" / "yet" / "there"
    out = materialize(resolve_options(manifest, {"V": raw}), file_dir)
    [path] = out.files
    assert out.env == {"V": str(path)}
    assert path.parent == file_dir
    assert path.suffix == ".car"
    assert path.read_bytes() == expected
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_fs_list_writes_one_file_per_item(make_agent: MakeAgent, tmp_path: Path) -> None:
    manifest = one(make_agent, "list[i32]", 'transport = "fs"')
    out = materialize(resolve_options(manifest, {"V": [1, 2, 3]}), tmp_path)
    assert len(out.files) == 3
    assert out.env["V"] == ":".join(str(p) for p in out.files)
    assert [p.read_bytes() for p in out.files] == [
        b"\x00\x00\x00\x01",
        b"\x00\x00\x00\x02",
        b"\x00\x00\x00\x03",
    ]
    assert len(set(out.files)) == 3


def test_fs_empty_list(make_agent: MakeAgent, tmp_path: Path) -> None:
    manifest = one(make_agent, "list[string]", 'transport = "fs"')
    out = materialize(resolve_options(manifest, {}), tmp_path / "never")
    assert out.env == {"V": ""}
    assert out.files == []


def test_mixed_env_and_fs(make_agent: MakeAgent, tmp_path: Path) -> None:
    manifest = make_agent(
        """\
        [options.A]
        type = "string"
        transport = "fs"
        [options.B]
        type = "u8"
        """
    )
    out = materialize(resolve_options(manifest, {"A": "x", "B": 1}), tmp_path)
    assert out.env["B"] == "1"
    assert Path(out.env["A"]).read_bytes() == b"x"


def test_secret_values_are_collected_for_redaction(make_agent: MakeAgent, tmp_path: Path) -> None:
    manifest = make_agent(
        """\
        [options.PLAIN]
        type = "secret"
        [options.ENCODED]
        type = "string"
        secret = true
        base64 = true
        [options.FILE]
        type = "secret"
        transport = "fs"
        [options.PUBLIC]
        type = "string"
        [options.EMPTY]
        type = "secret"
        """
    )
    resolved = resolve_options(
        manifest, {"PLAIN": "p4ss", "ENCODED": "k3y", "FILE": "f1le", "PUBLIC": "hello", "EMPTY": ""}
    )
    out = materialize(resolved, tmp_path)
    encoded = base64.b64encode(b"k3y").decode()
    assert out.env["ENCODED"] == encoded
    assert out.secret_values == {"p4ss", "k3y", encoded, "f1le"}
    assert Path(out.env["FILE"]).read_bytes() == b"f1le"
    assert "p4ss" not in repr(out)


def test_public_value(make_agent: MakeAgent) -> None:
    manifest = make_agent(
        """\
        [options.S]
        type = "secret"
        [options.N]
        type = "i32"
        [options.B]
        type = "blob"
        [options.L]
        type = "list[blob]"
        """
    )
    resolved = resolve_options(manifest, {"S": SECRET, "N": 4, "B": "AAE=", "L": ["AA=="]})
    by_name: dict[str, ResolvedOption] = {r.name: r for r in resolved}
    assert public_value(by_name["S"]) == "***"
    assert public_value(by_name["N"]) == 4
    assert public_value(by_name["B"]) == "AAE="
    assert public_values(resolved) == {"S": "***", "N": 4, "B": "AAE=", "L": ["AA=="]}
