"""The django_sockmail example project: start it with ``scripts/demo.sh``."""
