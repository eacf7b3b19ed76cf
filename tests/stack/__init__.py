"""The local stack's own parts: what they tell a person whose run failed."""
