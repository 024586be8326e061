"""Strict decoding and validation of recommend / similar requests, with recsys-service's rules and status codes.

Unknown fields and type errors are 400 ``RECSYS_INVALID_REQUEST``; semantic errors are 422. Defaults that the
service fills in add a top-level ``DEFAULT_APPLIED`` warning. Order: decode -> validate -> normalise (explain limits
are checked by the handler afterwards, since they depend on the caller's roles).
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from recsys_audit.sandbox.problems import ProblemError, bad_request, unprocessable

MAX_K = 200
DEFAULT_K = 20
MAX_ANCHORS = 50
MAX_CANDIDATE_IDS = 5000
MAX_TAGS = 200
EXPLAIN_LEVELS = ("none", "summary", "full")
_UNSAFE_SEGMENT = re.compile(r"[/\\\x00-\x1f\x7f]")

# field -> allowed keys of the nested object (None: scalar or list)
RECOMMEND_FIELDS: dict[str, set[str] | None] = {
    "surface": None,
    "segment": None,
    "k": None,
    "user": {"user_id", "anonymous_id", "session_id"},
    "context": {"locale", "device", "country", "now"},
    "anchors": {"item_ids", "max_anchors"},
    "candidates": {"include_ids", "exclude_ids"},
    "constraints": {"required_tags", "forbidden_tags", "max_per_tag"},
    "weights": {"pop", "cooc", "emb"},
    "options": {"include_reasons", "explain", "include_trace", "seed"},
    "experiment": {"id", "variant"},
}
SIMILAR_FIELDS: dict[str, set[str] | None] = {
    "surface": None,
    "segment": None,
    "item_id": None,
    "k": None,
    "constraints": RECOMMEND_FIELDS["constraints"],
    "options": RECOMMEND_FIELDS["options"],
}


def decode_json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body) if body.strip() else None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad_request(f"invalid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise bad_request("request body must be a JSON object")
    return value


def _strict(body: dict[str, Any], fields: dict[str, set[str] | None]) -> None:
    for key, value in body.items():
        if key not in fields:
            raise bad_request(f'json: unknown field "{key}"')
        nested = fields[key]
        if nested is not None and value is not None:
            if not isinstance(value, dict):
                raise bad_request(f"json: {key} must be an object")
            for inner in value:
                if inner not in nested:
                    raise bad_request(f'json: unknown field "{inner}"')


def _string(value: Any, name: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise bad_request(f"json: {name} must be a string")
    return value


def _string_list(value: Any, name: str, limit: int) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise bad_request(f"json: {name} must be an array of strings")
    if len(value) > limit:
        raise bad_request(f"{name}: at most {limit} entries")
    return value


def _integer(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"json: {name} must be an integer")
    return value


def _segment(value: str, name: str) -> str:
    if value in {".", ".."} or _UNSAFE_SEGMENT.search(value):
        raise bad_request(f"{name} must be one safe path segment")
    return value


def _warn(warnings: list[dict[str, str]], detail: str) -> None:
    warnings.append({"code": "DEFAULT_APPLIED", "detail": detail})


def _common(body: dict[str, Any], warnings: list[dict[str, str]]) -> dict[str, Any]:
    surface = _string(body.get("surface"), "surface").strip()
    if not surface:
        raise bad_request("surface is required")
    _segment(surface, "surface")
    segment = _string(body.get("segment"), "segment").strip()
    if not segment:
        segment = "default"
        _warn(warnings, "segment defaulted to default")
    _segment(segment, "segment")
    k = _integer(body.get("k"), "k")
    if k is None:
        k = DEFAULT_K
        _warn(warnings, f"k defaulted to {DEFAULT_K}")
    if not 1 <= k <= MAX_K:
        raise bad_request(f"k must be between 1 and {MAX_K}")
    return {"surface": surface, "segment": segment, "k": k}


def _constraints(raw: dict[str, Any] | None) -> dict[str, Any]:
    raw = raw or {}
    required = [tag.lower() for tag in _string_list(raw.get("required_tags"), "constraints.required_tags", MAX_TAGS)]
    forbidden = [tag.lower() for tag in _string_list(raw.get("forbidden_tags"), "constraints.forbidden_tags", MAX_TAGS)]
    max_per_tag = raw.get("max_per_tag") or {}
    if not isinstance(max_per_tag, dict):
        raise bad_request("json: constraints.max_per_tag must be an object")
    normalized_max: dict[str, int] = {}
    for tag, limit in max_per_tag.items():
        value = _integer(limit, f"constraints.max_per_tag.{tag}")
        if value is None or value < 0:
            raise unprocessable(f"constraints.max_per_tag.{tag} must be >= 0")
        normalized_max[tag.lower()] = value
    return {"required_tags": required, "forbidden_tags": forbidden, "max_per_tag": normalized_max}


def _options(raw: dict[str, Any] | None, warnings: list[dict[str, str]]) -> dict[str, Any]:
    if raw is None:
        _warn(warnings, "options defaulted")
        raw = {}
    explain = _string(raw.get("explain"), "options.explain") or "none"
    if explain not in EXPLAIN_LEVELS:
        raise unprocessable("options.explain must be one of none, summary, full")
    include_reasons, include_trace = raw.get("include_reasons", False), raw.get("include_trace", False)
    if not isinstance(include_reasons, bool) or not isinstance(include_trace, bool):
        raise bad_request("json: options.include_reasons and options.include_trace must be booleans")
    return {
        "include_reasons": include_reasons,
        "explain": explain,
        "include_trace": include_trace,
        "seed": _integer(raw.get("seed"), "options.seed"),
    }


def normalize_recommend(body: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, str]]]:
    _strict(body, RECOMMEND_FIELDS)
    warnings: list[dict[str, str]] = []
    request = _common(body, warnings)
    user = body.get("user") or {}
    request["user"] = {key: _string(user.get(key), f"user.{key}") for key in RECOMMEND_FIELDS["user"] or ()}
    if not any(request["user"].values()):
        raise unprocessable("user needs at least one of user_id, anonymous_id, session_id")

    context = body.get("context") or {}
    request["context"] = {key: _string(context.get(key), f"context.{key}") for key in ("locale", "device", "country")}
    now = _string(context.get("now"), "context.now")
    if now:
        try:
            datetime.fromisoformat(now.replace("Z", "+00:00"))
        except ValueError:
            raise bad_request("context.now must be RFC3339") from None
    request["context"]["now"] = now

    anchors = body.get("anchors") or {}
    anchor_ids = _string_list(anchors.get("item_ids"), "anchors.item_ids", MAX_ANCHORS)
    max_anchors = _integer(anchors.get("max_anchors"), "anchors.max_anchors")
    if max_anchors is None:
        max_anchors = MAX_ANCHORS
        if anchor_ids:
            _warn(warnings, f"anchors.max_anchors defaulted to {MAX_ANCHORS}")
    if max_anchors <= 0:
        raise bad_request("anchors.max_anchors must be > 0")
    if max_anchors < len(anchor_ids):
        raise unprocessable("anchors.max_anchors must be >= the number of anchors.item_ids")
    request["anchors"] = {"item_ids": anchor_ids, "max_anchors": max_anchors}

    candidates = body.get("candidates") or {}
    request["candidates"] = {
        "include_ids": _string_list(candidates.get("include_ids"), "candidates.include_ids", MAX_CANDIDATE_IDS),
        "exclude_ids": _string_list(candidates.get("exclude_ids"), "candidates.exclude_ids", MAX_CANDIDATE_IDS),
    }
    request["constraints"] = _constraints(body.get("constraints"))
    weights = body.get("weights") or {}
    for name, value in weights.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad_request(f"json: weights.{name} must be a number")
        if value < 0:
            raise unprocessable(f"weights.{name} must be >= 0")
    request["weights"] = {"pop": 1.0, "cooc": 1.0, "emb": 0.0} | {k: float(v) for k, v in weights.items()}
    request["options"] = _options(body.get("options"), warnings)
    experiment = body.get("experiment") or {}
    request["experiment"] = {
        "id": _string(experiment.get("id"), "experiment.id"),
        "variant": _string(experiment.get("variant"), "experiment.variant"),
    }
    return request, warnings


def normalize_similar(body: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, str]]]:
    _strict(body, SIMILAR_FIELDS)
    warnings: list[dict[str, str]] = []
    request = _common(body, warnings)
    item_id = _string(body.get("item_id"), "item_id").strip()
    if not item_id:
        raise bad_request("item_id is required")
    request["item_id"] = item_id
    request["constraints"] = _constraints(body.get("constraints"))
    request["options"] = _options(body.get("options"), warnings)
    return request, warnings


def check_explain(request: dict[str, Any], *, max_items: int, admin_required: bool, is_admin: bool) -> None:
    """Explain limits: admin-only levels first, then the size limit (rejected, never truncated)."""
    options = request["options"]
    if admin_required and not is_admin and (options["explain"] == "full" or options["include_trace"]):
        raise ProblemError(403, "explain=full and include_trace need the admin role", "RECSYS_FORBIDDEN")
    if options["explain"] != "none" and request["k"] > max_items:
        detail = f"k={request['k']} exceeds RECSYS_EXPLAIN_MAX_ITEMS={max_items}"
        raise unprocessable(detail, "RECSYS_EXPLAIN_TOO_LARGE")
