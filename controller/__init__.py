"""The control plane: spec, planner, executors, Kubernetes handlers. Never imports Beam."""
