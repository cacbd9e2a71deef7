# The decision every enforcement point asks for: data.userorg.authz.decision.
#
# Deny by default: a request is allowed only when it passes every policy below and something
# grants it (the platform admin flag or a role). The policies are checked in a fixed order; the
# first that denies names the decision's machine-readable reason and its policy id (shown in the
# 403 body and written to the audit trail):
#
#   userorg.authz.catalogue   the action is a scope of the catalogue
#   userorg.authz.status      the principal is active (its org and membership further down)
#   userorg.authz.credential  a key or token carries the action among its scopes
#   userorg.authz.platform    platform scopes and org-less actions need a platform admin
#   userorg.authz.tenancy     a principal acts only inside its orgs; resources stay in theirs
#   userorg.authz.status      the org and the membership are active
#   userorg.authz.rbac        a role of the subject grants the action (rbac.rego)
#   userorg.authz.mfa         sensitive actions need a fresh second factor (mfa.rego)
#   userorg.authz.budget      spending actions stop when the org's budget blocks
#   custom policies           package userorg.authz.custom, `deny` entries (custom.rego)
#
# The input and the data are described in docs/authorization.md. data.userorg.catalogue (scopes,
# system roles) and data.userorg.config (MFA, budget, cache TTL) come from the service; the
# index data.userorg.index.actions (per action: platform?, sensitive?, budget gated?, the system
# roles that grant it) is derived from both so that one lookup answers every question about the
# action (index_test.rego checks it against the catalogue).
#
# Performance: in regorus each rule reference or data lookup costs microseconds while an inline
# condition costs a fraction of one; hence one else-chain of inline conditions over the action's
# index entry (looked up once) and the input. See docs/authorization.md before restructuring.
package userorg.authz

# The action's index entry; undefined for an action outside the catalogue.
action := data.userorg.index.actions[input.action]

decision := deny("unknown_permission", "userorg.authz.catalogue") if {
	not action
} else := deny("unknown_principal_type", "userorg.authz.status") if {
	# (`not a == b` means the same on OPA and regorus when a is undefined; `not a in {...}`
	# and `not obj[a]` do not: OPA hoists the undefined a out of the negation)
	not input.subject.type == "user"
	not input.subject.type == "service_account"
} else := deny(concat("_", ["principal", object.get(object.get(input, "subject", {}), "status", "status_missing")]), "userorg.authz.status") if {
	not input.subject.status == "active"
} else := deny("credential_scope_missing", "userorg.authz.credential") if {
	# A credential without a scope list (an interactive session) carries the holder's grants.
	input.credential.scopes
	not input.action in input.credential.scopes
} else := deny("platform_admin_required", "userorg.authz.platform") if {
	not input.subject.platform_admin == true
	action.platform
} else := deny("platform_admin_required", "userorg.authz.platform") if {
	not input.subject.platform_admin == true
	not input.org.id
} else := deny("not_a_member", "userorg.authz.tenancy") if {
	not input.subject.platform_admin == true
	not input.membership.status
} else := deny("cross_tenant", "userorg.authz.tenancy") if {
	# A resource that names its org must live in the org the decision is asked for.
	input.resource.org_id != null
	not input.resource.org_id == input.org.id
} else := deny(concat("_", ["org", input.org.status]), "userorg.authz.status") if {
	# Platform admins act on orgs in any status (they suspend and restore them); an org waiting
	# for its purge still lets its members look at it and cancel the deletion.
	not input.subject.platform_admin == true
	input.org.status != "active"
	not pending_delete_exception
} else := deny(concat("_", ["membership", input.membership.status]), "userorg.authz.status") if {
	not input.subject.platform_admin == true
	input.membership.status != "active"
} else := deny("scope_missing", "userorg.authz.rbac") if {
	not input.subject.platform_admin == true
	not role_grants_action
} else := deny("mfa_required", "userorg.authz.mfa") if {
	action.sensitive
	input.subject.type == "user"
	not is_number(input.subject.mfa.verified_at)
} else := deny("mfa_stale", "userorg.authz.mfa") if {
	action.sensitive
	input.subject.type == "user"
	not mfa_fresh
} else := deny("budget_exceeded", "userorg.authz.budget") if {
	action.budget_gated
	input.budget.status == "block"
} else := deny(custom_denial[0], custom_denial[1]) if {
	action.custom_policies
	custom_denial
} else := {
	# The common allow: nothing shortens the TTL, nothing adds obligations.
	"allow": true,
	"reason": "granted_by_role",
	"policy_id": "userorg.authz.rbac",
	"obligations": [],
	"ttl_seconds": action.ttl_seconds,
} if {
	not input.subject.platform_admin == true
	not action.sensitive
	not action.custom_policies
	not input.budget.status == "warn"
} else := {
	# A sensitive action: the TTL is bounded by the MFA freshness (mfa.rego).
	"allow": true,
	"reason": "granted_by_role",
	"policy_id": "userorg.authz.rbac",
	"obligations": [],
	"ttl_seconds": ttl_seconds,
} if {
	not input.subject.platform_admin == true
	not action.custom_policies
	not input.budget.status == "warn"
} else := {
	"allow": true,
	"reason": grant[0],
	"policy_id": grant[1],
	"obligations": obligations,
	"ttl_seconds": ttl_seconds,
}

deny(reason, policy_id) := {
	"allow": false,
	"reason": reason,
	"policy_id": policy_id,
	"obligations": [],
	"ttl_seconds": data.userorg.config.decision_ttl_seconds,
}

# What grants an allowed request: the platform admin flag, else a role.
grant := ["platform_admin", "userorg.authz.platform"] if {
	input.subject.platform_admin == true
} else := ["granted_by_role", "userorg.authz.rbac"]

pending_delete_exception if {
	input.org.status == "pending_delete"
	input.action in {"orgs:read", "orgs:delete"}
}

# Role grants. System roles: the index lists, per action, the system roles granting it. Custom
# roles: the enforcement point resolves the subject's custom roles from the org's role
# definitions into custom_role_scopes; only org scopes count, so a custom role never grants a
# platform scope. (A positive rule, negated above: with malformed roles it is undefined or an
# error, and both deny. `not` over a builtin's result would allow on OPA's non-strict errors.)
role_grants_action if {
	count(object.filter(action.roles, input.subject.roles)) > 0
}

role_grants_action if {
	input.action in input.subject.custom_role_scopes
	not action.platform
}
