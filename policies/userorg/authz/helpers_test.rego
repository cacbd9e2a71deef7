# Shared fixtures of the policy tests (package userorg.authz_test; test files only).
package userorg.authz_test

now := 1700000000

# An active member of an active org holding `roles`, asking for `action`.
member(roles, action) := {
	"action": action,
	"now": now,
	"subject": {
		"id": "u-1",
		"type": "user",
		"status": "active",
		"platform_admin": false,
		"roles": roles,
		"custom_role_scopes": [],
		"mfa": {"verified_at": now - 60, "amr": ["pwd", "otp"]},
	},
	"org": {"id": "org-a", "status": "active"},
	"membership": {"status": "active"},
}

# A platform admin who is not a member of the org.
platform_admin(action) := object.union(member([], action), {
	"subject": object.union(member([], action).subject, {"platform_admin": true}),
	"membership": null,
})

# The same input with a part replaced (deep merge).
with_part(base, patch) := object.union(base, patch)

decide(inp) := d if {
	d := data.userorg.authz.decision with input as inp
}

denied(inp, reason, policy_id) if {
	d := decide(inp)
	d.allow == false
	d.reason == reason
	d.policy_id == policy_id
}

allowed(inp) if decide(inp).allow == true

org_scopes := {s | some s, entry in data.userorg.catalogue.scopes; entry.level == "org"}

platform_scopes := {s | some s, entry in data.userorg.catalogue.scopes; entry.level == "platform"}

org_roles := {r | some r, _ in data.userorg.catalogue.system_roles; r != "PlatformAdmin"}
