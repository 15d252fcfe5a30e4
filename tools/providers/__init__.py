"""One module per provider: its arguments and its ProviderSpec; ask_both's arguments."""
