"""Pure logic, no I/O: addresses, allocation, config model and validation, election, backoff.

Imports nothing from the rest of ironlb and never touches a socket, a clock or asyncio.
"""
