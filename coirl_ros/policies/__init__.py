"""Policies that act: the frozen chunked base policy interface and its composition with a residual."""
