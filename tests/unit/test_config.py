"""Settings: defaults load, and every invalid value stops start-up with one line naming the variable.

``load_settings`` reads a mapping (the environment). Secrets may come from ``<NAME>_FILE`` and are never
printed back, neither by ``repr``/``str`` nor inside an error message.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from service.config import Secret, Settings, SettingsError, load_settings

SECRET = "settings-test-secret-0123456789-abcdefghijklmnop"  # 48 bytes: enough for HS256 and HS384
BASE = {"RAGWATCH_JWT_SECRET": SECRET}


def settings_error(env: dict[str, str]) -> str:
    """The message of the :class:`SettingsError` that ``env`` raises (failing the test if none is raised)."""
    with pytest.raises(SettingsError) as caught:
        load_settings(env)
    return str(caught.value)


def write_public_key(path: Path, key: PublicKeyTypes) -> str:
    path.write_bytes(key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return str(path)


@pytest.fixture(scope="module")
def rsa_public_key_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    return write_public_key(tmp_path_factory.mktemp("keys") / "rsa.pem", key)


# --- defaults ------------------------------------------------------------------------------------------


def test_defaults_load_from_an_environment_holding_only_the_jwt_secret() -> None:
    settings = load_settings(BASE)

    assert isinstance(settings, Settings)
    assert settings.server.host == "127.0.0.1"
    assert settings.server.port == 8000
    assert settings.auth.mode == "jwt"
    assert settings.auth.algorithms == ("HS256",)
    assert settings.auth.leeway_s == 30
    assert settings.auth.secret == Secret(SECRET)
    assert settings.providers.embedder == "wordllama"
    assert settings.providers.embedding_dimensions is None  # the embedder's own width
    assert settings.rag.min_similarity is None  # the embedder's own threshold
    assert settings.rag.lexical_weight == 0.75
    assert settings.providers.llm == "extractive"
    assert settings.rag.chunk_size == 1600
    assert settings.rag.chunk_overlap == 200
    assert settings.openai.api_key is None
    assert settings.lancedb_uri == str(Path("./data") / "lancedb")


def test_dev_mode_needs_no_jwt_secret() -> None:
    assert load_settings({"RAGWATCH_AUTH_MODE": "dev"}).auth.mode == "dev"


def test_values_are_read_and_converted_from_their_variables() -> None:
    settings = load_settings(
        {
            **BASE,
            "RAGWATCH_PORT": " 9001 ",
            "RAGWATCH_CHUNK_SIZE": "1000",
            "RAGWATCH_CHUNK_OVERLAP": "0",
            "RAGWATCH_JWT_ALGORITHMS": "HS256, HS384",
            "RAGWATCH_LLM_TIMEOUT_S": "2.5",
            "RAGWATCH_LANCEDB_URI": "s3://bucket/ragwatch",
        }
    )

    assert settings.server.port == 9001
    assert settings.rag.chunk_size == 1000
    assert settings.rag.chunk_overlap == 0
    assert settings.auth.algorithms == ("HS256", "HS384")
    assert settings.providers.llm_timeout_s == 2.5
    assert settings.lancedb_uri == "s3://bucket/ragwatch"


def test_openai_provider_is_accepted_with_only_a_base_url_for_keyless_local_servers() -> None:
    settings = load_settings({**BASE, "RAGWATCH_LLM": "openai", "OPENAI_BASE_URL": "http://127.0.0.1:11434/v1"})

    assert settings.providers.llm == "openai"
    assert settings.openai.api_key is None


# --- every invalid value: one line naming the variable and what it expected ------------------------


@pytest.mark.parametrize(
    ("env", "variable", "expected"),
    [
        ({"RAGWATCH_PORT": "abc"}, "RAGWATCH_PORT", "expected an integer >= 1 and <= 65535"),
        ({"RAGWATCH_PORT": "70000"}, "RAGWATCH_PORT", "<= 65535"),
        ({"RAGWATCH_PORT": "0"}, "RAGWATCH_PORT", ">= 1"),
        ({"RAGWATCH_CHUNK_SIZE": "5"}, "RAGWATCH_CHUNK_SIZE", "expected an integer >= 100"),
        ({"RAGWATCH_AUTH_MODE": "bogus"}, "RAGWATCH_AUTH_MODE", "expected one of jwt, dev"),
        ({"RAGWATCH_JWT_ALGORITHMS": "none"}, "RAGWATCH_JWT_ALGORITHMS", "expected a comma-separated subset of"),
        ({"RAGWATCH_JWT_ALGORITHMS": "HS256,none"}, "RAGWATCH_JWT_ALGORITHMS", "got 'none'"),
        ({"RAGWATCH_JWT_ALGORITHMS": " , "}, "RAGWATCH_JWT_ALGORITHMS", "expected a comma-separated subset of"),
        ({"RAGWATCH_EMBEDDER": "x"}, "RAGWATCH_EMBEDDER", "expected one of wordllama, hashing, openai"),
        ({"RAGWATCH_EMBEDDING_DIMENSIONS": "384"}, "RAGWATCH_EMBEDDING_DIMENSIONS", "WordLlama embeds 64 to 256"),
        ({"RAGWATCH_LLM": "gpt"}, "RAGWATCH_LLM", "expected one of extractive, openai"),
        ({"RAGWATCH_LLM": "openai"}, "OPENAI_API_KEY", "required when RAGWATCH_LLM or RAGWATCH_EMBEDDER is openai"),
        ({"RAGWATCH_EMBEDDER": "openai"}, "OPENAI_API_KEY", "required"),
        ({"RAGWATCH_JWT_SECRET": "too-short"}, "RAGWATCH_JWT_SECRET", "expected at least 32 bytes"),
        ({"RAGWATCH_JWT_ALGORITHMS": "HS512"}, "RAGWATCH_JWT_SECRET", "expected at least 64 bytes for HS512"),
        ({"RAGWATCH_CHUNK_OVERLAP": "800"}, "RAGWATCH_CHUNK_OVERLAP", "less than half of RAGWATCH_CHUNK_SIZE"),
        ({"RAGWATCH_CHUNK_OVERLAP": "-1"}, "RAGWATCH_CHUNK_OVERLAP", ">= 0"),
        ({"RAGWATCH_LLM_TIMEOUT_S": "inf"}, "RAGWATCH_LLM_TIMEOUT_S", "expected a number > 0"),
        ({"RAGWATCH_LLM_TIMEOUT_S": "nan"}, "RAGWATCH_LLM_TIMEOUT_S", "expected a number > 0"),
        ({"RAGWATCH_JWT_LEEWAY_S": "3600"}, "RAGWATCH_JWT_LEEWAY_S", "<= 300"),
        ({"RAGWATCH_MAX_BODY_BYTES": "10MB"}, "RAGWATCH_MAX_BODY_BYTES", "expected an integer >= 1"),
        ({"RAGWATCH_READ_CONSISTENCY_S": "5"}, "RAGWATCH_READ_CONSISTENCY_S", "<= 1"),
        ({"RAGWATCH_JWT_SECRET": ""}, "RAGWATCH_JWT_SECRET", "required for HS* algorithms"),
        ({"RAGWATCH_JWT_ALGORITHMS": "RS256"}, "RAGWATCH_JWT_PUBLIC_KEY_FILE", "required (or RAGWATCH_JWT_JWKS_URL)"),
        (
            {"RAGWATCH_JWT_ALGORITHMS": "RS256", "RAGWATCH_JWT_JWKS_URL": "file:///etc/passwd"},
            "RAGWATCH_JWT_JWKS_URL",
            "expected an http:// or https:// URL",
        ),
        (
            {"RAGWATCH_JWT_ALGORITHMS": "ES256", "RAGWATCH_JWT_PUBLIC_KEY_FILE": "/nonexistent/key.pem"},
            "RAGWATCH_JWT_PUBLIC_KEY_FILE",
            "no file at '/nonexistent/key.pem'",
        ),
    ],
)
def test_an_invalid_value_stops_with_one_line_naming_the_variable_and_the_expectation(
    env: dict[str, str], variable: str, expected: str
) -> None:
    message = settings_error({**BASE, **env})

    assert "\n" not in message
    assert message.startswith(f"{variable}: ")
    assert expected in message
    assert SECRET not in message


def test_a_public_key_file_that_holds_no_pem_key_is_refused(tmp_path: Path) -> None:
    not_a_key = tmp_path / "key.pem"
    not_a_key.write_text("hello\n")

    message = settings_error({"RAGWATCH_JWT_ALGORITHMS": "RS256", "RAGWATCH_JWT_PUBLIC_KEY_FILE": str(not_a_key)})

    assert message == f"RAGWATCH_JWT_PUBLIC_KEY_FILE: expected a PEM public key in {str(not_a_key)!r}"


def test_a_public_key_that_serves_none_of_the_algorithms_is_refused(rsa_public_key_file: str) -> None:
    """An RSA key cannot verify ES256 tokens: starting anyway would refuse every token."""
    message = settings_error({"RAGWATCH_JWT_ALGORITHMS": "ES256", "RAGWATCH_JWT_PUBLIC_KEY_FILE": rsa_public_key_file})

    assert message.startswith("RAGWATCH_JWT_PUBLIC_KEY_FILE: ")
    assert "serves none of RAGWATCH_JWT_ALGORITHMS=ES256" in message
    assert "\n" not in message


def test_an_ec_key_on_another_curve_than_the_algorithm_is_refused(tmp_path: Path) -> None:
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    path = write_public_key(tmp_path / "p384.pem", p384)

    message = settings_error({"RAGWATCH_JWT_ALGORITHMS": "ES256", "RAGWATCH_JWT_PUBLIC_KEY_FILE": path})
    accepted = load_settings({"RAGWATCH_JWT_ALGORITHMS": "ES384", "RAGWATCH_JWT_PUBLIC_KEY_FILE": path})

    assert message.startswith("RAGWATCH_JWT_PUBLIC_KEY_FILE: ")
    assert accepted.auth.public_key_file == path


def test_an_rsa_key_shorter_than_2048_bits_is_refused(tmp_path: Path) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()  # noqa: S505 - the point of the test
    path = write_public_key(tmp_path / "weak.pem", weak)

    message = settings_error({"RAGWATCH_JWT_ALGORITHMS": "RS256", "RAGWATCH_JWT_PUBLIC_KEY_FILE": path})

    assert message == "RAGWATCH_JWT_PUBLIC_KEY_FILE: expected an RSA key of at least 2048 bits, got 1024"


def test_asymmetric_algorithms_load_with_a_public_key_file_or_a_jwks_url(rsa_public_key_file: str) -> None:
    with_file = load_settings(
        {"RAGWATCH_JWT_ALGORITHMS": "RS256,PS256", "RAGWATCH_JWT_PUBLIC_KEY_FILE": rsa_public_key_file}
    )
    with_jwks = load_settings(
        {"RAGWATCH_JWT_ALGORITHMS": "RS256", "RAGWATCH_JWT_JWKS_URL": "https://issuer.example/.well-known/jwks.json"}
    )

    assert with_file.auth.algorithms == ("RS256", "PS256")
    assert with_file.auth.secret is None
    assert with_jwks.auth.jwks_url == "https://issuer.example/.well-known/jwks.json"


# --- secrets from files ----------------------------------------------------------------------------------


def test_jwt_secret_is_read_from_the_file_named_by_the_file_variable(tmp_path: Path) -> None:
    path = tmp_path / "jwt_secret"
    path.write_text(SECRET + "\n")  # as `echo secret > file` writes it: the newline is not part of it

    settings = load_settings({"RAGWATCH_JWT_SECRET_FILE": str(path)})

    assert settings.auth.secret is not None
    assert settings.auth.secret.reveal() == SECRET


def test_openai_api_key_is_read_from_the_file_named_by_the_file_variable(tmp_path: Path) -> None:
    path = tmp_path / "openai_key"
    path.write_text("sk-from-a-mounted-file\n")

    settings = load_settings({**BASE, "RAGWATCH_LLM": "openai", "OPENAI_API_KEY_FILE": str(path)})

    assert settings.openai.api_key is not None
    assert settings.openai.api_key.reveal() == "sk-from-a-mounted-file"


@pytest.mark.parametrize("name", ["RAGWATCH_JWT_SECRET", "OPENAI_API_KEY"])
def test_setting_both_a_secret_and_its_file_variable_is_an_error(tmp_path: Path, name: str) -> None:
    path = tmp_path / "secret"
    path.write_text(SECRET)

    message = settings_error({**BASE, name: SECRET, f"{name}_FILE": str(path)})

    assert message == f"{name}: set either {name} or {name}_FILE, not both"


def test_an_unreadable_secret_file_is_a_one_line_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "secret"

    message = settings_error({"RAGWATCH_JWT_SECRET_FILE": str(missing)})

    assert message == f"RAGWATCH_JWT_SECRET_FILE: cannot read {str(missing)!r} (No such file or directory)"


def test_a_directory_given_as_secret_file_is_a_one_line_error(tmp_path: Path) -> None:
    message = settings_error({"OPENAI_API_KEY_FILE": str(tmp_path), **BASE})

    assert message.startswith(f"OPENAI_API_KEY_FILE: cannot read {str(tmp_path)!r}")
    assert "\n" not in message


def test_a_secret_file_that_is_not_utf8_text_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "binary"
    path.write_bytes(b"\xff\xfe" + os.urandom(40))

    message = settings_error({"RAGWATCH_JWT_SECRET_FILE": str(path)})

    assert message == f"RAGWATCH_JWT_SECRET_FILE: expected a UTF-8 text file, {str(path)!r} is not"


def test_an_empty_secret_file_is_an_error_rather_than_an_empty_secret(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_text("\n")

    message = settings_error({**BASE, "RAGWATCH_LLM": "openai", "OPENAI_API_KEY_FILE": str(path)})

    assert message.startswith("OPENAI_API_KEY_FILE: expected the secret in")


# --- secrets are never shown --------------------------------------------------------------------------


def test_a_secret_never_shows_its_value_in_repr_or_str() -> None:
    settings = load_settings({**BASE, "OPENAI_API_KEY": "sk-very-secret-key"})
    secret = settings.auth.secret
    assert secret is not None

    shown = [repr(secret), str(secret), f"{secret}", repr(settings), str(settings), repr(settings.openai)]

    for text in shown:
        assert SECRET not in text
        assert "sk-very-secret-key" not in text
    assert "**********" in repr(secret)


@pytest.mark.parametrize(
    "env",
    [
        {"RAGWATCH_JWT_SECRET": "short-secret-value"},
        {"RAGWATCH_JWT_SECRET": SECRET, "RAGWATCH_JWT_ALGORITHMS": "HS512"},
        {"RAGWATCH_JWT_SECRET": SECRET, "RAGWATCH_JWT_SECRET_FILE": "/run/secrets/jwt"},
        {"RAGWATCH_JWT_SECRET": SECRET, "RAGWATCH_PORT": "x"},
    ],
)
def test_an_error_message_never_echoes_a_secret(env: dict[str, str]) -> None:
    message = settings_error(env)

    assert env["RAGWATCH_JWT_SECRET"] not in message


def test_an_error_message_never_echoes_a_secret_read_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "short"
    path.write_text("file-held-short-secret")

    message = settings_error({"RAGWATCH_JWT_SECRET_FILE": str(path)})

    assert message == "RAGWATCH_JWT_SECRET: expected at least 32 bytes for HS256"
