"""The config-source reader: env files, Helm values (api.env, api.secrets, existingSecret) and docker-compose."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from recsys_audit.params import Params
from recsys_audit.probes.config import ConfigSourceError, load_config_view, parse_duration
from recsys_audit.redaction import redact_text


def params_with(tmp_path: Path, *sources: dict[str, str]) -> Params:
    params = Params.model_validate(
        {
            "environment": {"name": "t"},
            "target": {"base_url": "http://127.0.0.1:1"},
            "tenants": [{"id": "acme", "surfaces": ["home"]}],
            "config_sources": list(sources),
        }
    )
    params.source = tmp_path / "params.yaml"
    return params


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def test_env_file_values_quotes_comments_and_defaults(tmp_path: Path) -> None:
    write(
        tmp_path / "service.env",
        """
        # comment
        export ENV=production
        DEV_AUTH_ENABLED="false"
        CORS_ALLOWED_ORIGINS='https://shop.example'  # comment after a quoted value
        AUTH_JWKS_ALLOWED_HOSTS=idp.example # a comment
        EXPOSURE_HASH_SALT=9f2c1b7e8a6d4c3b2a190817
        """,
    )
    view = load_config_view(params_with(tmp_path, {"kind": "env_file", "path": "service.env"}))
    assert view.production
    assert view.flag("DEV_AUTH_ENABLED") is False
    assert view.value("AUTH_JWKS_ALLOWED_HOSTS") == "idp.example"
    assert view.value("CORS_ALLOWED_ORIGINS") == "https://shop.example"
    assert view.get("ENV").source == "env_file:service.env"
    # upstream defaults fill what the file does not set, with production-dependent ones following ENV
    assert view.get("AUTH_REQUIRED").state == "default" and view.flag("AUTH_REQUIRED") is True
    assert view.flag("AUTH_REQUIRE_TENANT_CLAIM") is True
    assert view.flag("DOCS_ENABLED") is False
    # a salt read from a file is registered as a secret: evidence rows show its length, redaction masks it
    row = view.rows(["EXPOSURE_HASH_SALT"])[0]
    assert row["value"] == "<24 characters>"
    assert "9f2c1b7e8a6d4c3b2a190817" not in redact_text("salt is 9f2c1b7e8a6d4c3b2a190817")


def test_development_defaults_when_env_unset(tmp_path: Path) -> None:
    write(tmp_path / "dev.env", "DEV_AUTH_ENABLED=true\n")
    view = load_config_view(params_with(tmp_path, {"kind": "env_file", "path": "dev.env"}))
    assert not view.production
    assert view.flag("AUTH_REQUIRE_TENANT_CLAIM") is False
    assert view.flag("DOCS_ENABLED") is True
    assert view.value("CORS_ALLOWED_ORIGINS") == "*"


def test_helm_values_secrets_are_judged_but_never_shown(tmp_path: Path) -> None:
    write(
        tmp_path / "values.yaml",
        """
        api:
          replicaCount: 3
          image: {repository: ghcr.io/aatuh/recsys-svc, tag: v0.1.0}
          env:
            ENV: production
            API_KEY_ENABLED: true
            RECSYS_ARTIFACT_S3_USE_SSL: "true"
          secrets:
            API_KEY_HASH_SECRET: a-value-in-the-values-file-0123456789
            EXPOSURE_HASH_SALT: ""
            EXPERIMENT_ASSIGNMENT_SALT:
        """,
    )
    view = load_config_view(params_with(tmp_path, {"kind": "helm_values", "path": "values.yaml"}))
    secret = view.get("API_KEY_HASH_SECRET")
    assert (secret.state, secret.source) == ("set", "helm_values:values.yaml api.secrets")
    assert len(secret.value or "") == 37  # judged by its length and shape…
    assert view.rows(["API_KEY_HASH_SECRET"])[0]["value"] == "<37 characters>"  # …and never shown
    # an entry whose value is "" (or null) is an empty secret, not a hidden one
    assert (view.get("EXPOSURE_HASH_SALT").state, view.value("EXPOSURE_HASH_SALT")) == ("set", "")
    assert view.value("EXPERIMENT_ASSIGNMENT_SALT") == ""
    assert view.flag("API_KEY_ENABLED") is True
    assert view.deployment["replicaCount"] == 3
    assert "a-value-in-the-values-file-0123456789" not in redact_text("x a-value-in-the-values-file-0123456789")


def test_sources_of_different_kinds_that_disagree_are_contradictions(tmp_path: Path) -> None:
    write(tmp_path / "service.env", "DEV_AUTH_ENABLED=false\nENV=production\n")
    write(tmp_path / "base.yaml", "api:\n  env:\n    DEV_AUTH_ENABLED: 'false'\n    ENV: staging\n")
    write(tmp_path / "prod.yaml", "api:\n  env:\n    ENV: production\n    DEV_AUTH_ENABLED: 'true'\n")
    sources = (
        {"kind": "env_file", "path": "service.env"},
        {"kind": "helm_values", "path": "base.yaml"},
        {"kind": "helm_values", "path": "prod.yaml"},
    )
    view = load_config_view(params_with(tmp_path, *sources))
    # Helm files layer (the later wins, as helm -f does): ENV agrees with the env file, DEV_AUTH_ENABLED does not
    assert view.contradictions("ENV") == []
    clash = view.contradictions("DEV_AUTH_ENABLED")
    assert [(v.source_kind, v.value) for v in clash] == [("env_file", "false"), ("helm_values", "true")]


def test_helm_existing_secret_makes_unset_variables_unknown(tmp_path: Path) -> None:
    write(
        tmp_path / "values.yaml",
        """
        api:
          existingSecret: recsys-api-secrets
          env:
            - {name: ENV, value: production}
            - name: EXPOSURE_HASH_SALT
              valueFrom: {secretKeyRef: {name: salts, key: exposure}}
        """,
    )
    view = load_config_view(params_with(tmp_path, {"kind": "helm_values", "path": "values.yaml"}))
    assert view.value("ENV") == "production"
    assert view.get("EXPOSURE_HASH_SALT").state == "hidden"
    unknown = view.get("DEV_AUTH_ENABLED")
    assert unknown.state == "unknown" and "recsys-api-secrets" in unknown.source
    assert view.flag("DEV_AUTH_ENABLED") is None


def test_later_sources_override_earlier_ones(tmp_path: Path) -> None:
    write(tmp_path / "base.env", "DEV_AUTH_ENABLED=true\nLOG_LEVEL=debug\n")
    write(tmp_path / "values.yaml", "api:\n  env:\n    DEV_AUTH_ENABLED: 'false'\n")
    view = load_config_view(
        params_with(tmp_path, {"kind": "env_file", "path": "base.env"}, {"kind": "helm_values", "path": "values.yaml"})
    )
    assert view.flag("DEV_AUTH_ENABLED") is False
    assert view.get("DEV_AUTH_ENABLED").source == "helm_values:values.yaml api.env"
    assert view.value("LOG_LEVEL") == "debug"


def test_compose_environment_env_file_and_shell_interpolation(tmp_path: Path) -> None:
    write(tmp_path / "api.env", "DEV_AUTH_ENABLED=true\nCORS_ALLOWED_ORIGINS=http://localhost:8001\n")
    write(
        tmp_path / "docker-compose.yml",
        """
        services:
          db:
            image: postgres:16
          api:
            env_file:
              - api.env
              - path: optional.env
                required: false
            environment:
              - ENV=production
              - EXPOSURE_HASH_SALT=${EXPOSURE_HASH_SALT}
              - API_KEY_HASH_SECRET
        """,
    )
    view = load_config_view(params_with(tmp_path, {"kind": "compose", "path": "docker-compose.yml", "service": "api"}))
    assert view.flag("DEV_AUTH_ENABLED") is True
    assert view.production
    assert view.get("EXPOSURE_HASH_SALT").state == "unknown"
    assert view.get("API_KEY_HASH_SECRET").state == "unknown"
    assert "services.api.environment" in view.get("ENV").source


def test_unreadable_sources_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigSourceError, match=r"missing\.env: cannot read"):
        load_config_view(params_with(tmp_path, {"kind": "env_file", "path": "missing.env"}))
    write(tmp_path / "bad.yaml", "api: [unclosed\n")
    with pytest.raises(ConfigSourceError, match=r"bad\.yaml: not valid YAML"):
        load_config_view(params_with(tmp_path, {"kind": "helm_values", "path": "bad.yaml"}))
    write(tmp_path / "compose.yml", "services:\n  db: {image: postgres}\n")
    with pytest.raises(ConfigSourceError, match=r"services\.api: no such compose service"):
        load_config_view(params_with(tmp_path, {"kind": "compose", "path": "compose.yml", "service": "api"}))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1m", 60.0), ("1m30s", 90.0), ("200ms", 0.2), ("0", 0.0), ("-1s", -1.0), ("5", None), ("soon", None)],
)
def test_go_durations(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == seconds
