"""Models and sample footage shipped with edge (installed as the package edge.models)."""
