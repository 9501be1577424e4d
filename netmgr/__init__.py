"""netmgr: a container network manager implementing Docker's Container Network Model."""

__version__ = "0.1.0"
