"""The demo app: holds the ``sockmail_demo`` management command."""
