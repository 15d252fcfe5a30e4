"""Spend: usage rows, the ledger and its budgets, the state file, and the usage report."""
