"""The declarative format: YAML documents in an org's folder, their Pydantic models, the JSON
Schema generated from them, and a loader that reports errors with file, line and field.

Each YAML document names its ``apiVersion`` (``userorg/v1``) and ``kind``:
``Organization``, ``RoleList``, ``MemberList``, ``ServiceAccountList`` or ``BudgetPolicy``.
A kind appears at most once per folder. A kind that is absent is not managed; inside a
document, a field that is absent is not managed either (its current value is left alone).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_serializer,
    model_validator,
)
from pydantic.alias_generators import to_camel

from userorg.authz.catalogue import ORG_SCOPES
from userorg.schemas import Description, Email, Name, RoleName, Slug

API_VERSION = "userorg/v1"
SCHEMA_VERSION = "v1"
SCHEMA_ID = "https://userorg.dev/schemas/declarative-v1.json"
YAML_SUFFIXES = (".yaml", ".yml")

Scope = Annotated[str, StringConstraints(min_length=3, max_length=64, pattern=r"^[a-z_:]+$")]
ServiceAccountName = Annotated[
    str,
    StringConstraints(min_length=2, max_length=100, pattern=r"^[a-z0-9](?:[a-z0-9._-]*[a-z0-9])?$"),
]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Percent = Annotated[StrictInt, Field(ge=1, le=1000)]
HttpsUrl = Annotated[str, StringConstraints(max_length=2048, pattern=r"^https://[^\s]+$")]


class SpecModel(BaseModel):
    """camelCase keys, unknown keys are errors, values never coerced from strings."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=False, extra="forbid", frozen=True
    )


class _Document(SpecModel):
    api_version: Literal["userorg/v1"] = Field(
        description="Format version of this document; always `userorg/v1` in this schema."
    )


class OrganizationDoc(_Document):
    """Org settings. Only the fields present are managed."""

    kind: Literal["Organization"]
    slug: Slug | None = Field(
        default=None,
        description="Safety check: when given, it must equal the org's slug or nothing applies.",
    )
    name: Name | None = None
    billing_owner_email: Email | None = None
    mfa_required_roles: Annotated[list[RoleName], Field(max_length=50)] | None = None


class RoleSpec(SpecModel):
    name: RoleName
    description: Description | None = None
    scopes: Annotated[list[Scope], Field(min_length=1, max_length=64)]


class RoleListDoc(_Document):
    """The org's custom roles. Roles not listed are deleted only when pruning is on."""

    kind: Literal["RoleList"]
    roles: Annotated[list[RoleSpec], Field(max_length=500)]


class MemberSpec(SpecModel):
    email: Email
    roles: Annotated[list[RoleName], Field(max_length=32)]


class MemberListDoc(_Document):
    """Members by email and their roles. Members not listed are removed only when pruning."""

    kind: Literal["MemberList"]
    members: Annotated[list[MemberSpec], Field(max_length=100_000)]


class ServiceAccountSpec(SpecModel):
    name: ServiceAccountName
    description: Description | None = None
    status: Literal["active", "disabled"] | None = None
    roles: Annotated[list[RoleName], Field(min_length=1, max_length=32)]


class ServiceAccountListDoc(_Document):
    """Service accounts and their roles. Accounts not listed are deleted only when pruning."""

    kind: Literal["ServiceAccountList"]
    service_accounts: Annotated[list[ServiceAccountSpec], Field(max_length=10_000)]


class BudgetNotifications(SpecModel):
    emails: Annotated[list[Email], Field(max_length=50)] = []
    webhook_urls: Annotated[list[HttpsUrl], Field(max_length=10)] = []


class BudgetPolicyDoc(_Document):
    """The org's budget policy (PRODUCT.md §7). Applied through the budgets capability."""

    kind: Literal["BudgetPolicy"]
    limit: Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=4)]
    currency: Currency
    period: Literal["monthly", "quarterly", "annual"]
    warn_threshold: Percent | None = Field(default=None, description="Percent of the limit")
    block_threshold: Percent | None = Field(default=None, description="Percent; ≥ warn")
    grace_period_minutes: Annotated[StrictInt, Field(ge=0, le=44_640)] | None = None
    override_required_roles: (
        Annotated[list[RoleName], Field(min_length=1, max_length=10)] | None
    ) = None
    notifications: BudgetNotifications | None = None

    @field_serializer("limit")
    def _canonical_limit(self, value: Decimal) -> str:
        # The budgets capability answers with the same canonical form (no spurious diffs).
        from userorg.budgets.money import money

        return money(value)

    @model_validator(mode="after")
    def _block_not_below_warn(self) -> BudgetPolicyDoc:
        if (
            self.warn_threshold is not None
            and self.block_threshold is not None
            and self.block_threshold < self.warn_threshold
        ):
            raise ValueError("blockThreshold must be at least warnThreshold")
        return self


DOCUMENT_MODELS: dict[str, type[_Document]] = {
    "Organization": OrganizationDoc,
    "RoleList": RoleListDoc,
    "MemberList": MemberListDoc,
    "ServiceAccountList": ServiceAccountListDoc,
    "BudgetPolicy": BudgetPolicyDoc,
}

AnyDocument = Annotated[
    OrganizationDoc | RoleListDoc | MemberListDoc | ServiceAccountListDoc | BudgetPolicyDoc,
    Field(discriminator="kind"),
]


def json_schema() -> dict[str, Any]:
    """The published JSON Schema (docs/schema/declarative-v1.json): one YAML document."""
    schema = TypeAdapter(AnyDocument).json_schema(by_alias=True)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "userorg declarative configuration, one YAML document",
        "description": (
            "An org folder holds YAML files; each document has apiVersion userorg/v1 and one "
            "kind. Unknown fields are errors; absent fields are not managed. Version "
            f"{SCHEMA_VERSION}."
        ),
        **schema,
    }


# -- desired state ------------------------------------------------------------------------
@dataclass
class DesiredOrg:
    """The normalized desired state of one org folder. ``None`` sections are not managed.

    Member and role lists are sorted; emails are lower-case. ``to_json`` is what the
    reconciler stores as ``applied_config`` (and what a drift check compares against).
    """

    slug: str | None = None
    org: dict[str, Any] = field(default_factory=dict)
    roles: dict[str, dict[str, Any]] | None = None
    members: dict[str, dict[str, Any]] | None = None
    service_accounts: dict[str, dict[str, Any]] | None = None
    budget: dict[str, Any] | None = None
    # Where each entry was declared ("member:a@b.c" -> (file, line, field)), for errors found
    # later, when the plan meets the actual state. Not stored.
    where: dict[str, tuple[str, int | None, str]] = field(default_factory=dict, compare=False)

    def locate(self, key: str) -> dict[str, Any]:
        file, line, name = self.where.get(key, (None, None, None))
        return {"file": file, "line": line, "field": name or None}

    def to_json(self) -> dict[str, Any]:
        return {
            "slug": self.slug,
            "org": self.org,
            "roles": self.roles,
            "members": self.members,
            "serviceAccounts": self.service_accounts,
            "budget": self.budget,
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> DesiredOrg:
        return cls(
            slug=value.get("slug"),
            org=dict(value.get("org") or {}),
            roles=value.get("roles"),
            members=value.get("members"),
            service_accounts=value.get("serviceAccounts"),
            budget=value.get("budget"),
        )


@dataclass(frozen=True)
class ConfigError:
    """One problem with the configuration, located as precisely as possible."""

    message: str
    file: str | None = None
    line: int | None = None
    field: str | None = None
    code: str = "invalid_config"

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "file": self.file,
            "line": self.line,
            "field": self.field,
        }

    def render(self) -> str:
        where = self.file or "<config>"
        if self.line is not None:
            where += f":{self.line}"
        if self.field:
            where += f": {self.field}"
        return f"{where}: {self.message}"


class InvalidConfig(Exception):
    def __init__(self, errors: list[ConfigError]) -> None:
        super().__init__("; ".join(e.render() for e in errors[:5]))
        self.errors = errors


Path_ = tuple[str | int, ...]


class _Located:
    """A YAML document and the line of every key / item path in it."""

    def __init__(self, file: str, data: Any, lines: dict[Path_, int]) -> None:
        self.file = file
        self.data = data
        self.lines = lines

    def line_of(self, path: Path_) -> int | None:
        path = tuple(path)
        while True:
            if path in self.lines:
                return self.lines[path]
            if not path:
                return None
            path = path[:-1]


def _field_name(path: Path_) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _index(
    node: yaml.Node, path: Path_, lines: dict[Path_, int], seen: set[int], file: str
) -> list[ConfigError]:
    errors: list[ConfigError] = []
    if id(node) in seen:
        return [
            ConfigError(
                "YAML anchors and aliases are not supported",
                file=file,
                line=node.start_mark.line + 1,
                field=_field_name(path) or None,
            )
        ]
    seen.add(id(node))
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        keys: set[str] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                errors.append(
                    ConfigError(
                        "mapping keys must be plain strings",
                        file=file,
                        line=key_node.start_mark.line + 1,
                        field=_field_name(path) or None,
                    )
                )
                continue
            key = str(key_node.value)
            child = (*path, key)
            if key in keys:
                errors.append(
                    ConfigError(
                        f"duplicate key {key!r}",
                        file=file,
                        line=key_node.start_mark.line + 1,
                        field=_field_name(child),
                    )
                )
            keys.add(key)
            lines[child] = key_node.start_mark.line + 1
            errors += _index(value_node, child, lines, seen, file)
    elif isinstance(node, yaml.SequenceNode):
        for position, item in enumerate(node.value):
            errors += _index(item, (*path, position), lines, seen, file)
    return errors


# libyaml's parser when PyYAML was built with it (several times faster), the same safe subset.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_yaml(file: str, text: str) -> tuple[list[_Located], list[ConfigError]]:
    """Every document of one file with its line index, or the syntax errors."""
    documents: list[_Located] = []
    errors: list[ConfigError] = []
    loader = _Loader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            lines: dict[Path_, int] = {}
            problems = _index(node, (), lines, set(), file)
            if problems:
                errors += problems
                continue
            documents.append(_Located(file, loader.construct_document(node), lines))
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        errors.append(
            ConfigError(
                f"invalid YAML: {error.problem or error.context or 'syntax error'}",
                file=file,
                line=mark.line + 1 if mark else None,
                code="invalid_yaml",
            )
        )
    except yaml.YAMLError as error:
        errors.append(ConfigError(f"invalid YAML: {error}", file=file, code="invalid_yaml"))
    finally:
        loader.dispose()
    return documents, errors


def _validation_errors(doc: _Located, error: ValidationError) -> list[ConfigError]:
    out = []
    for item in error.errors(include_url=False, include_input=False):
        path: Path_ = tuple(item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        out.append(
            ConfigError(
                message,
                file=doc.file,
                line=doc.line_of(path),
                field=_field_name(path) or None,
            )
        )
    return out


def _duplicates(
    doc: _Located, items: list[Any], key: str, list_field: str, normalize: Any = None
) -> list[ConfigError]:
    seen: dict[str, int] = {}
    errors = []
    for position, item in enumerate(items):
        value = getattr(item, key)
        value = normalize(value) if normalize else value
        if value in seen:
            path: Path_ = (list_field, position, key)
            errors.append(
                ConfigError(
                    f"duplicate {key} {value!r} (first at item {seen[value]})",
                    file=doc.file,
                    line=doc.line_of(path),
                    field=_field_name(path),
                    code="duplicate_entry",
                )
            )
        else:
            seen[value] = position
    return errors


_SYSTEM_ONLY_ROLE = "PlatformAdmin"


def load_documents(files: Mapping[str, bytes], *, max_file_bytes: int) -> DesiredOrg:
    """Validate the YAML files of one org folder and build its desired state.

    Raises ``InvalidConfig`` with every problem found (file, line, field)."""
    errors: list[ConfigError] = []
    by_kind: dict[str, tuple[_Located, _Document]] = {}
    for name in sorted(files):
        raw = files[name]
        if len(raw) > max_file_bytes:
            errors.append(
                ConfigError(
                    f"file is {len(raw)} bytes; the limit is {max_file_bytes}",
                    file=name,
                    code="file_too_large",
                )
            )
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            errors.append(ConfigError("file is not UTF-8 text", file=name, code="invalid_yaml"))
            continue
        documents, problems = parse_yaml(name, text)
        errors += problems
        for doc in documents:
            if doc.data is None:
                continue
            if not isinstance(doc.data, dict):
                errors.append(
                    ConfigError(
                        "a document must be a mapping with apiVersion and kind",
                        file=name,
                        line=doc.line_of(()),
                    )
                )
                continue
            kind = doc.data.get("kind")
            model = DOCUMENT_MODELS.get(kind) if isinstance(kind, str) else None
            if model is None:
                errors.append(
                    ConfigError(
                        f"unknown kind {kind!r}; expected one of {', '.join(DOCUMENT_MODELS)}",
                        file=name,
                        line=doc.line_of(("kind",)),
                        field="kind",
                    )
                )
                continue
            try:
                parsed = model.model_validate(doc.data)
            except ValidationError as error:
                errors += _validation_errors(doc, error)
                continue
            if kind in by_kind:
                first = by_kind[kind][0]
                errors.append(
                    ConfigError(
                        f"kind {kind} is already declared in {first.file}:{first.line_of(())}",
                        file=name,
                        line=doc.line_of(()),
                        field="kind",
                        code="duplicate_kind",
                    )
                )
                continue
            by_kind[str(kind)] = (doc, parsed)
    desired = DesiredOrg()
    if "Organization" in by_kind:
        doc, parsed = by_kind["Organization"]
        assert isinstance(parsed, OrganizationDoc)
        fields = parsed.model_fields_set
        desired.slug = parsed.slug
        desired.where["org:slug"] = (doc.file, doc.line_of(("slug",)), "slug")
        if "name" in fields and parsed.name is not None:
            desired.org["name"] = parsed.name
        if "billing_owner_email" in fields and parsed.billing_owner_email is not None:
            desired.org["billingOwnerEmail"] = parsed.billing_owner_email
        if "mfa_required_roles" in fields and parsed.mfa_required_roles is not None:
            desired.org["mfaRequiredRoles"] = sorted(set(parsed.mfa_required_roles))
            desired.where["org:mfaRequiredRoles"] = (
                doc.file,
                doc.line_of(("mfaRequiredRoles",)),
                "mfaRequiredRoles",
            )
    if "RoleList" in by_kind:
        doc, parsed = by_kind["RoleList"]
        assert isinstance(parsed, RoleListDoc)
        errors += _duplicates(doc, parsed.roles, "name", "roles")
        desired.roles = {}
        for position, role in enumerate(parsed.roles):
            unknown = sorted(set(role.scopes) - ORG_SCOPES)
            if unknown:
                path: Path_ = ("roles", position, "scopes")
                errors.append(
                    ConfigError(
                        f"unknown or non-org scopes: {', '.join(unknown)}",
                        file=doc.file,
                        line=doc.line_of(path),
                        field=_field_name(path),
                        code="unknown_scope",
                    )
                )
            if role.name in _RESERVED_ROLE_NAMES:
                path = ("roles", position, "name")
                errors.append(
                    ConfigError(
                        f"{role.name} is a system role and cannot be redefined",
                        file=doc.file,
                        line=doc.line_of(path),
                        field=_field_name(path),
                        code="system_role_read_only",
                    )
                )
            spec: dict[str, Any] = {"scopes": sorted(set(role.scopes))}
            if "description" in role.model_fields_set:
                spec["description"] = role.description
            desired.roles[role.name] = spec
            desired.where[f"role:{role.name}"] = (
                doc.file,
                doc.line_of(("roles", position)),
                f"roles[{position}]",
            )
    if "MemberList" in by_kind:
        doc, parsed = by_kind["MemberList"]
        assert isinstance(parsed, MemberListDoc)
        errors += _duplicates(doc, parsed.members, "email", "members", str.lower)
        desired.members = {}
        desired.where["members"] = (doc.file, doc.line_of(("members",)), "members")
        for position, member in enumerate(parsed.members):
            email = member.email.lower()
            desired.members[email] = {"roles": sorted(set(member.roles))}
            desired.where[f"member:{email}"] = (
                doc.file,
                doc.line_of(("members", position, "roles")),
                f"members[{position}].roles",
            )
    if "ServiceAccountList" in by_kind:
        doc, parsed = by_kind["ServiceAccountList"]
        assert isinstance(parsed, ServiceAccountListDoc)
        errors += _duplicates(doc, parsed.service_accounts, "name", "serviceAccounts")
        desired.service_accounts = {}
        for position, account in enumerate(parsed.service_accounts):
            desired.where[f"service_account:{account.name}"] = (
                doc.file,
                doc.line_of(("serviceAccounts", position, "roles")),
                f"serviceAccounts[{position}].roles",
            )
            spec = {"roles": sorted(set(account.roles))}
            if "description" in account.model_fields_set:
                spec["description"] = account.description
            if "status" in account.model_fields_set and account.status is not None:
                spec["status"] = account.status
            desired.service_accounts[account.name] = spec
    if "BudgetPolicy" in by_kind:
        doc, parsed = by_kind["BudgetPolicy"]
        assert isinstance(parsed, BudgetPolicyDoc)
        desired.budget = parsed.model_dump(
            mode="json", by_alias=True, exclude_unset=True, exclude={"api_version", "kind"}
        )
        desired.where["budget"] = (doc.file, doc.line_of(()), "")
        desired.where["budget:overrideRequiredRoles"] = (
            doc.file,
            doc.line_of(("overrideRequiredRoles",)),
            "overrideRequiredRoles",
        )
    errors += _role_references(by_kind, desired)
    if errors:
        raise InvalidConfig(errors)
    return desired


_RESERVED_ROLE_NAMES = frozenset(
    {"PlatformAdmin", "OrgOwner", "OrgAdmin", "BillingAdmin", "Developer", "OrgViewer"}
)


def _role_references(
    by_kind: dict[str, tuple[_Located, _Document]], desired: DesiredOrg
) -> list[ConfigError]:
    """PlatformAdmin is a global flag, never an org role: refuse it wherever a role is named."""
    errors = []
    checks: list[tuple[str, str, str]] = [
        ("MemberList", "members", "roles"),
        ("ServiceAccountList", "serviceAccounts", "roles"),
    ]
    for kind, list_field, key in checks:
        if kind not in by_kind:
            continue
        doc, _ = by_kind[kind]
        for position, item in enumerate(doc.data.get(list_field) or []):
            roles = item.get(key) if isinstance(item, dict) else None
            if isinstance(roles, list) and _SYSTEM_ONLY_ROLE in roles:
                path: Path_ = (list_field, position, key, roles.index(_SYSTEM_ONLY_ROLE))
                errors.append(
                    ConfigError(
                        "PlatformAdmin is a platform flag, not an org role",
                        file=doc.file,
                        line=doc.line_of(path),
                        field=_field_name(path),
                        code="unknown_role",
                    )
                )
    del desired
    return errors


_SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


def is_config_file(name: str) -> bool:
    return (
        name.endswith(YAML_SUFFIXES) and not name.startswith(".") and bool(_SAFE_NAME.match(name))
    )
