"""`make bench`: the edge and the projector measured against baselines run on the same machine."""
