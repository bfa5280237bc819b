import json

import pytest

from morelib.labels import ENTITY_TYPES, NONE, RELATIONS, candidates, load_rel2id, normalize_label, relation_types


def test_relations_are_the_21_more_labels_in_rel2id_order():
    assert len(RELATIONS) == 21 and len(set(RELATIONS)) == 21
    assert RELATIONS[0] == NONE
    assert RELATIONS[1] == "/per/per/opponent" and RELATIONS[-1] == "/loc/loc/contain"
    assert ENTITY_TYPES == ("per", "org", "loc", "misc")


def test_candidates_for_person_and_organisation():
    assert candidates("per", "org") == [NONE, "/per/org/opposed_to", "/per/org/leader_of", "/per/org/member_of"]


def test_a_type_pair_without_relations_admits_only_none():
    assert candidates("org", "per") == [NONE]
    assert candidates("misc", "misc") == [NONE]


def test_every_relation_is_a_candidate_of_exactly_its_own_type_pair():
    for label in RELATIONS[1:]:
        pairs = [(a, b) for a in ENTITY_TYPES for b in ENTITY_TYPES if label in candidates(a, b)]
        assert pairs == [relation_types(label)]


def test_unknown_entity_type_is_refused():
    with pytest.raises(ValueError, match="person"):
        candidates("person", "org")


def test_normalize_label_forgives_case_and_missing_slash_only():
    assert normalize_label(" PER/org/leader_of ") == "/per/org/leader_of"
    assert normalize_label("None") == NONE
    assert normalize_label("leader_of") is None
    assert normalize_label("") is None


def test_load_rel2id_orders_by_id_and_rejects_gaps(tmp_path):
    path = tmp_path / "rel2id.json"
    path.write_text(json.dumps({"b": 1, "a": 0}))
    assert load_rel2id(path) == ("a", "b")
    path.write_text(json.dumps({"b": 2, "a": 0}))
    with pytest.raises(ValueError, match="without gaps"):
        load_rel2id(path)
    path.write_text('{"a": 0,\n "b": }')
    with pytest.raises(ValueError, match=r"rel2id\.json:2: not valid JSON"):
        load_rel2id(path)
    path.write_text('["a", "b"]')
    with pytest.raises(ValueError, match=r"rel2id\.json: expected an object"):
        load_rel2id(path)
