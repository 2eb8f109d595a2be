"""A hand-written SMTP client: a sans-I/O protocol core and a thin socket driver.

Nothing in this package imports Django.
"""
