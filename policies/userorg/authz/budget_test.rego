# The budget hook: input.budget.status for the spending scopes.
package userorg.authz_test

budget(inp, status) := object.union(inp, {"budget": {"status": status}})

invoke := member(["Developer"], "inference:invoke")

test_blocked_budget_denies_spending if {
	denied(budget(invoke, "block"), "budget_exceeded", "userorg.authz.budget")
}

test_blocked_budget_binds_platform_admins if {
	denied(budget(platform_admin("inference:invoke"), "block"), "budget_exceeded", "userorg.authz.budget")
}

test_warning_budget_allows_with_an_obligation if {
	d := decide(budget(invoke, "warn"))
	d.allow == true
	d.obligations == [{"type": "budget_warning", "status": "warn"}]
}

test_ok_or_unknown_budget_allows if {
	allowed(budget(invoke, "ok"))
	allowed(invoke)
}

test_blocked_budget_leaves_other_actions_alone if {
	allowed(budget(member(["OrgOwner"], "users:read"), "block"))
}
