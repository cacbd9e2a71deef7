# MFA freshness for sensitive actions (the index flags them from data.userorg.config.mfa).
package userorg.authz_test

sensitive := "orgs:delete"

verified(inp, at) := object.union(inp, {"subject": object.union(inp.subject, {"mfa": {"verified_at": at, "amr": ["pwd", "otp"]}})})

max_age := data.userorg.config.mfa.max_age_seconds

test_sensitive_scope_is_flagged_in_this_test_data if {
	data.userorg.index.actions[sensitive].sensitive == true
	sensitive in data.userorg.config.mfa.sensitive_scopes
}

test_fresh_mfa_allows_with_a_ttl_bounded_by_freshness if {
	d := decide(verified(member(["OrgOwner"], sensitive), now - (max_age - 10)))
	d.allow == true
	d.ttl_seconds == 10
}

test_very_fresh_mfa_keeps_the_normal_ttl if {
	d := decide(verified(member(["OrgOwner"], sensitive), now - 1))
	d.ttl_seconds == data.userorg.config.decision_ttl_seconds
}

test_missing_mfa_is_denied if {
	denied(verified(member(["OrgOwner"], sensitive), null), "mfa_required", "userorg.authz.mfa")
}

test_stale_mfa_is_denied if {
	denied(verified(member(["OrgOwner"], sensitive), now - max_age - 1), "mfa_stale", "userorg.authz.mfa")
}

test_mfa_from_the_future_is_stale if {
	denied(verified(member(["OrgOwner"], sensitive), now + 3600), "mfa_stale", "userorg.authz.mfa")
}

test_missing_clock_fails_closed if {
	inp := object.remove(member(["OrgOwner"], sensitive), ["now"])
	denied(inp, "mfa_stale", "userorg.authz.mfa")
}

test_platform_admins_need_fresh_mfa_too if {
	denied(verified(platform_admin(sensitive), null), "mfa_required", "userorg.authz.mfa")
}

test_service_accounts_are_not_asked_for_mfa if {
	inp := verified(member(["OrgOwner"], sensitive), null)
	allowed(object.union(inp, {"subject": object.union(inp.subject, {"type": "service_account"})}))
}

test_other_actions_ignore_mfa if {
	allowed(verified(member(["OrgOwner"], "orgs:read"), null))
}

test_scope_check_comes_before_mfa if {
	denied(verified(member(["OrgViewer"], sensitive), null), "scope_missing", "userorg.authz.rbac")
}
