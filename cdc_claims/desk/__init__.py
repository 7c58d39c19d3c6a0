"""The billing desk: a small web app where billing staff see held claims and act on them."""
