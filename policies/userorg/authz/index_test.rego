# The action index (data.userorg.index.actions) must agree with the catalogue it is derived from.
package userorg.authz_test

index_errors contains [scope, role] if {
	some role, scopes in data.userorg.catalogue.system_roles
	some scope in scopes
	not data.userorg.index.actions[scope].roles[role]
}

index_errors contains [scope, role] if {
	some scope, entry in data.userorg.index.actions
	some role, _ in entry.roles
	not scope in data.userorg.catalogue.system_roles[role]
}

index_errors contains [scope, "platform"] if {
	some scope, entry in data.userorg.index.actions
	entry.platform != (data.userorg.catalogue.scopes[scope].level == "platform")
}

index_errors contains [scope, "missing"] if {
	some scope, _ in data.userorg.catalogue.scopes
	not data.userorg.index.actions[scope]
}

test_index_matches_the_catalogue if count(index_errors) == 0
