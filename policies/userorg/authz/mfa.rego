# MFA freshness: sensitive actions (data.userorg.config.mfa.sensitive_scopes, flagged in the
# index) need a second factor verified at most data.userorg.config.mfa.max_age_seconds ago
# (input.subject.mfa.verified_at, Unix seconds; input.now is the time of the decision). Only
# interactive users are asked: service accounts have no second factor, their credentials are
# scoped instead.
package userorg.authz

mfa_age := input.now - input.subject.mfa.verified_at if {
	is_number(input.now)
	is_number(input.subject.mfa.verified_at)
}

mfa_fresh if {
	mfa_age >= 0
	mfa_age <= data.userorg.config.mfa.max_age_seconds
}

# An allowed sensitive decision may be cached only until the verification gets too old.
ttl_seconds := data.userorg.config.decision_ttl_seconds if {
	not action.sensitive
} else := data.userorg.config.decision_ttl_seconds if {
	input.subject.type != "user"
} else := min([data.userorg.config.decision_ttl_seconds, remaining]) if {
	remaining := floor(data.userorg.config.mfa.max_age_seconds - mfa_age)
} else := 0
