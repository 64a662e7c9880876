"""mutual-aid-bot: needs, offers, matches and shifts for mutual-aid pods on Matrix."""

__version__ = "0.2.0"
