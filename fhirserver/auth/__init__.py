"""Authorization: SMART scopes, access tokens, the access policy and its application."""
