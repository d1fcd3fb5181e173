"""Acting: the policy's decision, moves through the private store, alerts, and recovery."""
