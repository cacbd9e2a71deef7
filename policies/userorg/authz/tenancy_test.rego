# Tenancy: a principal acts only inside its orgs; resources stay in theirs.
package userorg.authz_test

test_outsider_is_not_a_member if {
	inp := object.union(member(["OrgOwner"], "users:read"), {"membership": null})
	denied(inp, "not_a_member", "userorg.authz.tenancy")
}

test_outsider_without_membership_key if {
	inp := object.remove(member(["OrgOwner"], "users:read"), ["membership"])
	denied(inp, "not_a_member", "userorg.authz.tenancy")
}

test_cross_tenant_resource_is_denied if {
	inp := object.union(member(["OrgOwner"], "api_keys:write"), {"resource": {"type": "api_key", "id": "k-1", "org_id": "org-b"}})
	denied(inp, "cross_tenant", "userorg.authz.tenancy")
}

test_resource_in_the_same_org_is_fine if {
	allowed(object.union(member(["OrgOwner"], "api_keys:write"), {"resource": {"type": "api_key", "id": "k-1", "org_id": "org-a"}}))
}

test_resource_without_org_is_fine if {
	allowed(object.union(member(["Developer"], "inference:invoke"), {"resource": {"type": "model", "id": "gpt-x", "org_id": null}}))
}

test_platform_admin_cannot_mix_tenants_either if {
	inp := object.union(platform_admin("users:read"), {"resource": {"type": "user", "id": "u-9", "org_id": "org-b"}})
	denied(inp, "cross_tenant", "userorg.authz.tenancy")
}

test_org_less_actions_need_a_platform_admin if {
	denied(object.remove(member(["OrgOwner"], "orgs:read"), ["org"]), "platform_admin_required", "userorg.authz.platform")
	allowed(object.remove(platform_admin("orgs:create"), ["org"]))
}
