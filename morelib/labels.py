"""The MORE label set: 21 relations, four entity types, and which relations a type pair admits."""

from __future__ import annotations

from pathlib import Path

# The 21 labels in the order of the MORE release's rel2id.json (ids 0..20).
RELATIONS: tuple[str, ...] = (
    "none",
    "/per/per/opponent",
    "/per/per/partner",
    "/per/per/relatives",
    "/per/per/alternate_names",
    "/per/org/opposed_to",
    "/per/org/leader_of",
    "/per/org/member_of",
    "/per/loc/place_of_birth",
    "/per/loc/place_of_residence",
    "/per/loc/place_of_governance",
    "/per/misc/present_in",
    "/per/misc/awarded",
    "/per/misc/party",
    "/per/misc/nationality",
    "/per/misc/president",
    "/org/org/alternate_names",
    "/org/org/subsidiary",
    "/org/loc/locate_at",
    "/org/misc/present_in",
    "/loc/loc/contain",
)
NONE = "none"
ENTITY_TYPES: tuple[str, ...] = ("per", "org", "loc", "misc")
REL2ID: dict[str, int] = {r: i for i, r in enumerate(RELATIONS)}


def relation_types(label: str) -> tuple[str, str] | None:
    """``/per/org/member_of`` -> ``("per", "org")`` (object type, entity type); ``none`` -> None."""
    if label == NONE:
        return None
    _, obj_type, ent_type, _ = label.split("/", 3)
    return obj_type, ent_type


def candidates(obj_type: str, ent_type: str, relations: tuple[str, ...] = RELATIONS) -> list[str]:
    """Labels allowed for an (object type, entity type) pair; ``none`` is always allowed."""
    for t in (obj_type, ent_type):
        if t not in ENTITY_TYPES:
            raise ValueError(f"unknown entity type {t!r}; expected one of {ENTITY_TYPES}")
    return [NONE] + [r for r in relations if relation_types(r) == (obj_type, ent_type)]


def load_rel2id(path: str | Path) -> tuple[str, ...]:
    """Read a release's rel2id.json, the source of truth for the label set when present."""
    from morelib.files import read_json

    mapping = read_json(path)
    if not isinstance(mapping, dict) or not all(isinstance(i, int) for i in mapping.values()):
        raise ValueError(f"{path}: expected an object {{label: id}} with integer ids")
    ordered = sorted(mapping.items(), key=lambda kv: kv[1])
    if [i for _, i in ordered] != list(range(len(ordered))):
        raise ValueError(f"{path}: ids must be 0..{len(ordered) - 1} without gaps")
    return tuple(name for name, _ in ordered)


def normalize_label(text: str | None, relations: tuple[str, ...] = RELATIONS) -> str | None:
    """Map a model's answer to one of the labels, or None when it is not one.

    Forgives case, surrounding whitespace and a missing leading slash; nothing else.
    """
    if text is None:
        return None
    t = text.strip().lower()
    if not t:
        return None
    if t != NONE and not t.startswith("/"):
        t = "/" + t
    return t if t in relations else None
