"""The data plane: everything that runs inside a stage's pod. Never imports kopf."""
