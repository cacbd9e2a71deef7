# The custom-policy hook (package userorg.authz.custom), exercised with mocked rules.
package userorg.authz_test

test_custom_denial_comes_after_the_built_in_policies if {
	inp := member(["OrgOwner"], "api_keys:write")
	d := decide(inp) with data.userorg.authz.custom.deny as {{"reason": "outside_office_hours", "policy_id": "acme.hours"}}
		with data.userorg.index.actions["api_keys:write"].custom_policies as true
	d.allow == false
	d.reason == "outside_office_hours"
	d.policy_id == "acme.hours"
}

test_custom_denial_never_hides_a_built_in_one if {
	inp := member(["OrgViewer"], "api_keys:write")
	d := decide(inp) with data.userorg.authz.custom.deny as {{"reason": "zzz", "policy_id": "acme.x"}}
		with data.userorg.index.actions["api_keys:write"].custom_policies as true
	d.reason == "scope_missing"
}

test_custom_denials_are_reported_in_a_stable_order if {
	inp := member(["OrgOwner"], "orgs:read")
	d := decide(inp) with data.userorg.authz.custom.deny as {{"reason": "b_rule"}, {"reason": "a_rule", "policy_id": "acme.a"}}
		with data.userorg.index.actions["orgs:read"].custom_policies as true
	d.reason == "a_rule"
	d.policy_id == "acme.a"
}

test_custom_obligations_travel_with_the_allow if {
	inp := member(["OrgOwner"], "audit:export")
	d := decide(inp) with data.userorg.authz.custom.obligation as {{"type": "notify", "channel": "security"}}
		with data.userorg.authz.custom.deny as set()
		with data.userorg.index.actions["audit:export"].custom_policies as true
	d.allow == true
	d.obligations == [{"type": "notify", "channel": "security"}]
}
