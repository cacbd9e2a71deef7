"""Declarative management: org configuration declared in Git, reconciled into the database."""
