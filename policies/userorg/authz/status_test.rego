# Principal, org and membership status; malformed input fails closed.
package userorg.authz_test

suspended_subject(inp) := object.union(inp, {"subject": object.union(inp.subject, {"status": "suspended"})})

test_suspended_principal_is_denied if {
	denied(suspended_subject(member(["OrgOwner"], "orgs:read")), "principal_suspended", "userorg.authz.status")
}

test_suspended_platform_admin_is_denied if {
	denied(suspended_subject(platform_admin("orgs:create")), "principal_suspended", "userorg.authz.status")
}

test_disabled_service_account_is_denied if {
	inp := member(["Developer"], "inference:invoke")
	sa := object.union(inp, {"subject": object.union(inp.subject, {"type": "service_account", "status": "disabled"})})
	denied(sa, "principal_disabled", "userorg.authz.status")
}

test_missing_status_fails_closed if {
	inp := member(["OrgOwner"], "orgs:read")
	no_status := object.union(object.remove(inp, ["subject"]), {"subject": object.remove(inp.subject, ["status"])})
	denied(no_status, "principal_status_missing", "userorg.authz.status")
}

test_unknown_principal_type_fails_closed if {
	inp := member(["OrgOwner"], "orgs:read")
	denied(object.union(inp, {"subject": object.union(inp.subject, {"type": "robot"})}), "unknown_principal_type", "userorg.authz.status")
}

test_suspended_org_denies_its_members if {
	inp := with_part(member(["OrgOwner"], "users:read"), {"org": {"id": "org-a", "status": "suspended"}})
	denied(inp, "org_suspended", "userorg.authz.status")
	denied(object.union(inp, {"action": "orgs:read"}), "org_suspended", "userorg.authz.status")
}

test_platform_admin_acts_on_a_suspended_org if {
	inp := with_part(platform_admin("orgs:suspend"), {"org": {"id": "org-a", "status": "suspended"}})
	allowed(inp)
}

test_pending_delete_org_allows_only_looking_and_cancelling if {
	inp := with_part(member(["OrgOwner"], "orgs:read"), {"org": {"id": "org-a", "status": "pending_delete"}})
	allowed(inp)
	allowed(object.union(inp, {"action": "orgs:delete"}))
	denied(object.union(inp, {"action": "users:read"}), "org_pending_delete", "userorg.authz.status")
}

test_suspended_membership_is_denied if {
	inp := with_part(member(["OrgOwner"], "orgs:read"), {"membership": {"status": "suspended"}})
	denied(inp, "membership_suspended", "userorg.authz.status")
}

test_empty_input_fails_closed if {
	d := decide({})
	d.allow == false
	d.reason == "unknown_permission"
}

test_missing_subject_fails_closed if {
	inp := object.remove(member(["OrgOwner"], "orgs:read"), ["subject"])
	denied(inp, "unknown_principal_type", "userorg.authz.status")
}

test_platform_admin_flag_must_be_true_not_truthy if {
	inp := member([], "users:write")
	fake := object.union(inp, {"subject": object.union(inp.subject, {"platform_admin": "yes"})})
	not allowed(fake)
}

test_subject_without_roles_is_granted_nothing if {
	inp := member(["OrgOwner"], "orgs:read")
	no_roles := object.union(object.remove(inp, ["subject"]), {"subject": object.remove(inp.subject, ["roles", "custom_role_scopes"])})
	denied(no_roles, "scope_missing", "userorg.authz.rbac")
}
