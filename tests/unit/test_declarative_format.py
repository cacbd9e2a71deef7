"""The declarative YAML format: validation with file/line/field, the published JSON Schema, plans."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from userorg.declarative.plan import SKIP_BUDGETS, SKIP_PRUNE, ActualOrg, compute_plan
from userorg.declarative.schema import InvalidConfig, json_schema, load_documents

ROOT = Path(__file__).resolve().parents[2]
MAX = 1_048_576


def load(**files: str):  # type: ignore[no-untyped-def]
    return load_documents({k: v.encode() for k, v in files.items()}, max_file_bytes=MAX)


def errors(**files: str) -> list[tuple[str | None, int | None, str | None, str]]:
    with pytest.raises(InvalidConfig) as caught:
        load(**files)
    return [(e.file, e.line, e.field, e.code) for e in caught.value.errors]


def test_published_schema_is_generated_from_the_models() -> None:
    published = json.loads((ROOT / "docs" / "schema" / "declarative-v1.json").read_text())
    assert published == json_schema(), "stale schema: run `make contract`"
    kinds = {
        d["properties"]["kind"]["const"]
        for d in published["$defs"].values()
        if "kind" in d.get("properties", {})
    }
    assert kinds == {"Organization", "RoleList", "MemberList", "ServiceAccountList", "BudgetPolicy"}


def test_valid_folder_normalizes_and_leaves_unmentioned_fields_unmanaged() -> None:
    desired = load(
        **{
            "org.yaml": "apiVersion: userorg/v1\nkind: Organization\nname: Acme\n",
            "members.yaml": (
                "apiVersion: userorg/v1\nkind: MemberList\nmembers:\n"
                "  - email: Ada@Example.com\n    roles: [OrgOwner, Developer, OrgOwner]\n"
            ),
        }
    )
    assert desired.org == {"name": "Acme"}  # billingOwnerEmail, mfaRequiredRoles: not managed
    assert desired.members == {"ada@example.com": {"roles": ["Developer", "OrgOwner"]}}
    assert desired.roles is None
    assert desired.service_accounts is None
    assert desired.budget is None


def test_errors_name_file_line_and_field() -> None:
    assert errors(
        **{
            "m.yaml": (
                "apiVersion: userorg/v1\n"
                "kind: MemberList\n"
                "members:\n"
                "  - email: a@example.com\n"
                "    roles: [Developer]\n"
                "  - email: not-an-email\n"
                "    roles: [Developer]\n"
                "  - email: A@example.com\n"
                "    roles: [Developer]\n"
                "    extra: 1\n"
            )
        }
    ) == [
        ("m.yaml", 6, "members[1].email", "invalid_config"),
        ("m.yaml", 10, "members[2].extra", "invalid_config"),
    ]
    # Duplicates, unknown scopes, system role names, PlatformAdmin.
    found = errors(
        **{
            "a.yaml": (
                "apiVersion: userorg/v1\nkind: MemberList\nmembers:\n"
                "  - {email: a@example.com, roles: [Developer]}\n"
                "  - {email: A@EXAMPLE.com, roles: [PlatformAdmin]}\n"
            ),
            "b.yaml": (
                "apiVersion: userorg/v1\nkind: RoleList\nroles:\n"
                "  - {name: OrgAdmin, scopes: [orgs:read]}\n"
                "  - name: Ops\n    scopes: [orgs:read, no:such]\n"
            ),
        }
    )
    assert ("a.yaml", 5, "members[1].email", "duplicate_entry") in found
    assert ("a.yaml", 5, "members[1].roles[0]", "unknown_role") in found
    assert ("b.yaml", 4, "roles[0].name", "system_role_read_only") in found
    assert ("b.yaml", 6, "roles[1].scopes", "unknown_scope") in found


def test_yaml_problems() -> None:
    assert errors(**{"x.yaml": "apiVersion: userorg/v1\nkind: [unclosed\n"})[0][:2] == ("x.yaml", 3)
    assert errors(**{"x.yaml": "apiVersion: userorg/v1\nkind: Nope\n"}) == [
        ("x.yaml", 2, "kind", "invalid_config")
    ]
    assert errors(**{"x.yaml": "apiVersion: userorg/v1\nkind: Organization\nname: a\nname: b\n"})[
        0
    ] == ("x.yaml", 4, "name", "invalid_config")
    bomb = "apiVersion: userorg/v1\nkind: Organization\nname: &a x\nbillingOwnerEmail: *a\n"
    assert errors(**{"x.yaml": bomb})[0][3] == "invalid_config"
    assert errors(**{"x.yaml": "- just\n- a list\n"})[0][:2] == ("x.yaml", 1)
    assert (
        errors(
            **{
                "a.yaml": "apiVersion: userorg/v1\nkind: Organization\n",
                "b.yaml": "apiVersion: userorg/v1\nkind: Organization\n",
            }
        )[0][3]
        == "duplicate_kind"
    )
    assert (
        errors(**{"x.yaml": "apiVersion: userorg/v2\nkind: Organization\n"})[0][2] == "apiVersion"
    )
    big = {"x.yaml": "a" * (MAX + 1)}
    assert errors(**big)[0][3] == "file_too_large"
    budget = "apiVersion: userorg/v1\nkind: BudgetPolicy\nlimit: 10\ncurrency: usd\nperiod: weekly\nwarnThreshold: 90\nblockThreshold: 80\n"
    fields = {e[2] for e in errors(**{"b.yaml": budget})}
    assert {"currency", "period"} <= fields


def test_plan_orders_operations_and_reports_what_it_will_not_apply() -> None:
    desired = load(
        **{
            "r.yaml": "apiVersion: userorg/v1\nkind: RoleList\nroles:\n  - {name: Ops, scopes: [orgs:read]}\n",
            "m.yaml": (
                "apiVersion: userorg/v1\nkind: MemberList\nmembers:\n"
                "  - {email: a@example.com, roles: [OrgOwner]}\n"
                "  - {email: b@example.com, roles: [Ops]}\n"
            ),
            "b.yaml": "apiVersion: userorg/v1\nkind: BudgetPolicy\nlimit: 10\ncurrency: EUR\nperiod: annual\n",
        }
    )
    actual = ActualOrg(
        slug="acme",
        roles={"Old": {"scopes": ["orgs:read"], "description": None}},
        members={
            "a@example.com": {"roles": ["Developer"], "status": "active"},
            "c@example.com": {"roles": [], "status": "active"},
            "d@example.com": {"roles": [], "status": "active"},
            "e@example.com": {"roles": [], "status": "active"},
        },
    )
    plan = compute_plan(desired, actual, prune=False)
    assert [(op.kind, op.action, op.target, op.skipped) for op in plan.operations] == [
        ("role", "create", "Ops", None),
        ("member", "create", "b@example.com", None),
        ("member", "update", "a@example.com", None),
        ("member", "delete", "c@example.com", SKIP_PRUNE),
        ("member", "delete", "d@example.com", SKIP_PRUNE),
        ("member", "delete", "e@example.com", SKIP_PRUNE),
        ("role", "delete", "Old", SKIP_PRUNE),
        ("budget_policy", "update", "", SKIP_BUDGETS),
    ]
    assert plan.valid
    assert "not applied: budgets capability unavailable" in plan.render()
    pruned = compute_plan(desired, actual, prune=True, max_removal_fraction=0.25)
    assert [e.code for e in pruned.errors] == ["removal_guard"]
    allowed = compute_plan(desired, actual, prune=True, max_removal_fraction=0.75)
    assert allowed.valid


def test_plan_refuses_unknown_roles_and_a_wrong_slug() -> None:
    desired = load(
        **{
            "o.yaml": "apiVersion: userorg/v1\nkind: Organization\nslug: other\n",
            "m.yaml": "apiVersion: userorg/v1\nkind: MemberList\nmembers:\n  - {email: a@example.com, roles: [OrgOwner, Ghost]}\n",
        }
    )
    plan = compute_plan(desired, ActualOrg(slug="acme"), prune=False)
    codes = {(e.code, e.file, e.line) for e in plan.errors}
    assert ("slug_mismatch", "o.yaml", 3) in codes
    assert ("unknown_role", "m.yaml", 4) in codes
