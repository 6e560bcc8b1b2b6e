"""Handing the fields a create (POST) left to our later applies: pure managedFields surgery."""

from __future__ import annotations

from typing import Any

import pytest
from kubeswarm_operator.kube.client import field_paths, handed_to_apply, merged_fields

pytestmark = pytest.mark.unit

OURS = "kubeswarm-operator"


def entry(manager: str, operation: str, fields: dict[str, Any], **extra: str) -> dict[str, Any]:
    return {"manager": manager, "operation": operation, "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": fields, **extra}


POSTED = {"f:metadata": {"f:labels": {".": {}, "f:a": {}, "f:gone": {}}}, "f:data": {".": {}, "f:k": {}, "f:old": {}}}
APPLIED = {"f:metadata": {"f:labels": {"f:a": {}}}, "f:data": {"f:k": {}}}


def test_the_fields_only_our_create_holds_go_to_our_apply_and_the_others_entries_stay() -> None:
    theirs = entry("kube-controller-manager", "Update", {"f:status": {"f:replicas": {}}}, subresource="status")
    handed = handed_to_apply([entry(OURS, "Apply", APPLIED), entry(OURS, "Update", POSTED), theirs], OURS, frozenset())
    assert handed is not None
    assert [(e["manager"], e["operation"]) for e in handed] == [(OURS, "Apply"), ("kube-controller-manager", "Update")]
    assert field_paths(handed[0]["fieldsV1"]) == field_paths(POSTED) | field_paths(APPLIED)
    assert handed[1] is theirs


def test_fields_written_by_other_means_stay_with_the_update_entry() -> None:
    handed = handed_to_apply([entry(OURS, "Apply", APPLIED), entry(OURS, "Update", POSTED)], OURS, frozenset({"data"}))
    assert handed is not None
    assert handed[1]["operation"] == "Update" and handed[1]["fieldsV1"] == {"f:data": POSTED["f:data"]}
    assert ("f:metadata", "f:labels", "f:gone") in field_paths(handed[0]["fieldsV1"])
    assert ("f:data", "f:old") not in field_paths(handed[0]["fieldsV1"])


@pytest.mark.parametrize(
    "managed",
    [
        [entry(OURS, "Apply", APPLIED)],  # created by apply: nothing to hand over
        [entry(OURS, "Apply", POSTED), entry(OURS, "Update", APPLIED)],  # the apply covers all the create held
        [entry(OURS, "Update", POSTED)],  # never applied
        [entry(OURS, "Apply", APPLIED), entry(OURS, "Update", POSTED, subresource="status")],  # a status write's entry
        [entry(OURS, "Apply", APPLIED), entry("someone", "Update", POSTED)],  # another manager's fields are theirs
    ],
)
def test_nothing_is_handed_over_where_no_later_apply_would_leave_a_field_behind(managed: list[dict[str, Any]]) -> None:
    assert handed_to_apply(managed, OURS, frozenset()) is None


def test_merged_fields_is_the_union_of_both_trees() -> None:
    assert field_paths(merged_fields(POSTED, APPLIED)) == field_paths(POSTED) | field_paths(APPLIED)
    assert field_paths({"f:a": {".": {}}}) == set(), "a map's own marker is not a field"
