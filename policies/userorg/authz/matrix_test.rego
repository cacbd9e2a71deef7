# The role × scope matrix: every system role against every scope of the catalogue.
# Expected: an org role allows exactly its org scopes (from the catalogue's role table, not from
# the index the decision uses); a platform admin allows everything, even outside its orgs.
package userorg.authz_test

expected_allow(role, scope) if {
	scope in data.userorg.catalogue.system_roles[role]
	scope in org_scopes
}

matrix_mismatches contains [role, scope, got] if {
	some role in org_roles
	some scope, _ in data.userorg.catalogue.scopes
	expected_allow(role, scope)
	got := decide(member([role], scope))
	got.allow != true
}

matrix_mismatches contains [role, scope, got] if {
	some role in org_roles
	some scope, _ in data.userorg.catalogue.scopes
	got := decide(member([role], scope))
	not expected_allow(role, scope)
	got.allow != false
}

test_every_org_role_against_every_scope if {
	print("role/scope mismatches:", matrix_mismatches)
	count(matrix_mismatches) == 0
}

# The reason of every matrix denial is machine-readable and names its policy.
matrix_denials contains [role, scope, d.reason] if {
	some role in org_roles
	some scope, _ in data.userorg.catalogue.scopes
	not expected_allow(role, scope)
	d := decide(member([role], scope))
	not d.reason in {"scope_missing", "platform_admin_required"}
}

test_matrix_denials_name_the_missing_grant if count(matrix_denials) == 0

platform_admin_refusals contains scope if {
	some scope, _ in data.userorg.catalogue.scopes
	d := decide(platform_admin(scope))
	not d.allow
}

test_platform_admin_allows_every_scope_in_any_org if count(platform_admin_refusals) == 0

test_platform_admin_grant_is_named if {
	d := decide(platform_admin("users:write"))
	d.reason == "platform_admin"
	d.policy_id == "userorg.authz.platform"
}

test_platform_scopes_need_a_platform_admin if {
	every scope in platform_scopes {
		denied(member(["OrgOwner"], scope), "platform_admin_required", "userorg.authz.platform")
	}
}

test_several_roles_grant_their_union if {
	allowed(member(["OrgViewer", "Developer"], "inference:invoke"))
	allowed(member(["OrgViewer", "Developer"], "audit:read"))
	denied(member(["OrgViewer", "Developer"], "users:write"), "scope_missing", "userorg.authz.rbac")
}

test_no_roles_grant_nothing if {
	denied(member([], "orgs:read"), "scope_missing", "userorg.authz.rbac")
}

test_unknown_role_grants_nothing if {
	denied(member(["SuperUser"], "orgs:read"), "scope_missing", "userorg.authz.rbac")
}

test_custom_role_scopes_grant_org_scopes_only if {
	custom := with_part(member(["Auditor"], "audit:export"), {"subject": object.union(
		member(["Auditor"], "audit:export").subject,
		{"custom_role_scopes": ["audit:export", "orgs:create"]},
	)})
	allowed(custom)
	not allowed(object.union(custom, {"action": "audit:read"}))
	denied(object.union(custom, {"action": "orgs:create"}), "platform_admin_required", "userorg.authz.platform")
}

test_unknown_action_is_denied_for_everyone if {
	denied(member(["OrgOwner"], "orgs:fly"), "unknown_permission", "userorg.authz.catalogue")
	denied(platform_admin("orgs:fly"), "unknown_permission", "userorg.authz.catalogue")
}

test_allowed_decision_is_well_formed if {
	d := decide(member(["OrgViewer"], "orgs:read"))
	d == {
		"allow": true,
		"reason": "granted_by_role",
		"policy_id": "userorg.authz.rbac",
		"obligations": [],
		"ttl_seconds": data.userorg.config.decision_ttl_seconds,
	}
}
