# Obligations travel with an allow: the caller must carry them out (or pass them on).
# A budget in its warning band (input.budget.status == "warn", filled by the budget service for
# the spending scopes, data.userorg.config.budget.gated_scopes) allows with a warning.
package userorg.authz

obligations := array.concat(budget_obligations, custom_obligations)

budget_obligations := [{"type": "budget_warning", "status": "warn"}] if {
	action.budget_gated
	input.budget.status == "warn"
} else := []

custom_obligations := [o | some o in data.userorg.authz.custom.obligation] if {
	action.custom_policies
	data.userorg.authz.custom.obligation
} else := []
