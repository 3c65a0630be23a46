"""The agent registry: ``coral-agent.toml`` manifests, their options, and the local catalog."""

from coral_server.registry.catalog import LATEST, Registry, manifest_json, option_json, version_key
from coral_server.registry.errors import (
    AgentNotInRegistry,
    FieldError,
    ManifestInvalid,
    OptionsInvalid,
    RegistryError,
)
from coral_server.registry.manifest import (
    MANIFEST_FILENAME,
    AgentManifest,
    DockerRuntime,
    ExecutableRuntime,
    OptionSpec,
    OptionTransport,
    RuntimeTransport,
    load_manifest,
)
from coral_server.registry.options import (
    SECRET_MASK,
    OptionEnvironment,
    ResolvedOption,
    encode_env_value,
    encode_file_value,
    materialize,
    public_value,
    public_values,
    resolve_options,
)

__all__ = [
    "LATEST",
    "MANIFEST_FILENAME",
    "SECRET_MASK",
    "AgentManifest",
    "AgentNotInRegistry",
    "DockerRuntime",
    "ExecutableRuntime",
    "FieldError",
    "ManifestInvalid",
    "OptionEnvironment",
    "OptionSpec",
    "OptionTransport",
    "OptionsInvalid",
    "Registry",
    "RegistryError",
    "ResolvedOption",
    "RuntimeTransport",
    "encode_env_value",
    "encode_file_value",
    "load_manifest",
    "manifest_json",
    "materialize",
    "option_json",
    "public_value",
    "public_values",
    "resolve_options",
    "version_key",
]
