# The hook for custom policies. An operator adds modules in package userorg.authz.custom (any
# file name, in this directory or below) with rules like:
#
#     package userorg.authz.custom
#
#     deny contains {"reason": "outside_office_hours", "policy_id": "acme.hours"} if {
#         input.action == "api_keys:write"
#         time.clock([time.now_ns(), "Europe/Berlin"])[0] < 7
#     }
#
#     obligation contains {"type": "notify", "channel": "security"} if input.action == "audit:export"
#
# Custom policies can only deny (after every built-in policy allowed) and add obligations; they
# never grant. With several denials the first by reason is reported.
package userorg.authz

custom_denial := sort([[x.reason, object.get(x, "policy_id", "userorg.authz.custom")] | some x in data.userorg.authz.custom.deny])[0] if {
	count(data.userorg.authz.custom.deny) > 0
}
