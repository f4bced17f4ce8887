"""Xhuma: IHE XCPD/XCA responding gateway over NHS PDS, SDS and GP Connect."""

__version__ = "0.1.0"
