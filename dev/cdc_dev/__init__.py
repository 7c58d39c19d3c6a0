"""Development tooling of cdc-claims: the local stack, the Bahmni simulator, the demo (not shipped)."""
