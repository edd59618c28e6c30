"""Reports rendered for people (text) and machines (JSON, SARIF 2.1.0)."""
