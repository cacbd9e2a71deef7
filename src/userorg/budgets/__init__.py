"""Budgets (PRODUCT.md §7): policies, usage intake, exact enforcement, overrides, alerts."""
