# Credentials narrower than their holder: API keys and scoped tokens.
package userorg.authz_test

keyed(inp, scopes) := object.union(inp, {"credential": {"type": "api_key", "scopes": scopes}})

test_key_scopes_narrow_the_roles if {
	denied(keyed(member(["OrgOwner"], "users:write"), ["inference:invoke"]), "credential_scope_missing", "userorg.authz.credential")
	allowed(keyed(member(["OrgOwner"], "inference:invoke"), ["inference:invoke"]))
}

test_key_scopes_never_widen_the_roles if {
	denied(keyed(member(["OrgViewer"], "users:write"), ["users:write"]), "scope_missing", "userorg.authz.rbac")
}

test_empty_key_scopes_allow_nothing if {
	denied(keyed(member(["OrgOwner"], "orgs:read"), []), "credential_scope_missing", "userorg.authz.credential")
}

test_key_scopes_bind_platform_admins_too if {
	denied(keyed(platform_admin("orgs:create"), ["orgs:read"]), "credential_scope_missing", "userorg.authz.credential")
}

test_session_without_scope_list_carries_the_roles if {
	allowed(object.union(member(["OrgOwner"], "users:write"), {"credential": {"type": "session"}}))
}
